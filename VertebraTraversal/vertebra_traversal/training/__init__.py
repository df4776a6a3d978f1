"""Training of the iterative FCN (paper §3.6): sampling, loss, augmentation, trainer.

Submodules: :mod:`.sampler` (memory/target/completeness rules), :mod:`.loss`, :mod:`.augment`,
:mod:`.data` (dataset discovery and the on-disk model-grid cache), :mod:`.patches` (the worker-side
patch dataset), :mod:`.config` (presets), :mod:`.runfolder` (run identity, checkpoint, logs),
:mod:`.validation` and :mod:`.trainer` (the loop, resume, final TorchScript model).
"""
