"""Training of the iterative FCN (paper §3.6): sampling, loss, augmentation, trainer.

Submodules: :mod:`.sampler` (memory/target rules), :mod:`.loss`, :mod:`.augment`, :mod:`.data`
(dataset discovery and the on-disk cache), :mod:`.patches` (the worker-side patch dataset),
:mod:`.config` (presets) and :mod:`.trainer` (the loop, checkpoints, resume, final model).
"""
