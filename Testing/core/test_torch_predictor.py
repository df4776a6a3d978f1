"""TorchPredictor: channel order, chunking into batches, pass counting, shape checks, and agreement
with the saved network it wraps."""
from pathlib import Path

import numpy as np
import pytest
import torch

from vertebra_traversal.checkpoint import LoadedModel, ModelMetadata, load_model, save_torchscript
from vertebra_traversal.network import IterativeFCN, NetworkConfig
from vertebra_traversal.predictor import PatchPrediction
from vertebra_traversal.torch_predictor import TorchPredictor

torch.set_num_threads(1)
PATCH = (8, 8, 8)
CT_NORM = {"kind": "ct", "clip": [-1000, 2000], "scale": 0.001, "offset": 0}


def _metadata(patch=PATCH) -> ModelMetadata:
    return ModelMetadata(modality="CT", target="vertebra", spacing_mm=(2.0, 2.0, 2.0), patch_size=patch,
                         normalization=CT_NORM)


class RecordingModule:
    """Stands in for the network: seg = image channel, label = mean image, complete = mean memory."""

    def __init__(self) -> None:
        self.batch_sizes = []

    def __call__(self, x: torch.Tensor):
        assert not torch.is_grad_enabled()  # inference mode
        self.batch_sizes.append(int(x.shape[0]))
        return x[:, :1], x[:, 0].mean(dim=(1, 2, 3)), x[:, 1].mean(dim=(1, 2, 3))


def _patches(count: int):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(count,) + PATCH).astype(np.float32)
    memories = (rng.random((count,) + PATCH) > 0.5).astype(np.float32)
    return images, memories


def test_channels_are_image_then_memory_and_outputs_are_numpy():
    module = RecordingModule()
    predictor = TorchPredictor(LoadedModel(module, _metadata(), torch.device("cpu"), Path("fake.pt")))
    images, memories = _patches(3)
    result = predictor(images, memories)
    assert isinstance(result, PatchPrediction)
    assert result.probabilities.shape == (3,) + PATCH and result.probabilities.dtype == np.float32
    np.testing.assert_array_equal(result.probabilities, images)
    np.testing.assert_allclose(result.label_values, images.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(result.completeness, memories.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_batches_are_split_into_chunks_and_passes_counted():
    module = RecordingModule()
    predictor = TorchPredictor(LoadedModel(module, _metadata(), torch.device("cpu"), Path("fake.pt")),
                               batch_size=2)
    images, memories = _patches(5)
    result = predictor(images, memories)
    assert module.batch_sizes == [2, 2, 1]
    assert predictor.passes == 5
    np.testing.assert_array_equal(result.probabilities, images)  # order preserved across chunks
    predictor(images[:1], memories[:1])
    assert predictor.passes == 6
    empty = predictor(images[:0], memories[:0])
    assert empty.probabilities.shape == (0,) + PATCH and empty.label_values.shape == (0,)
    assert predictor.passes == 6


def test_wrong_shapes_and_batch_size_are_refused():
    predictor = TorchPredictor(LoadedModel(RecordingModule(), _metadata(), torch.device("cpu"), Path("f.pt")))
    images, memories = _patches(2)
    with pytest.raises(ValueError, match="memories"):
        predictor(images, memories[:, :4])
    with pytest.raises(ValueError, match="batch size"):
        predictor(images, memories[:1])
    with pytest.raises(ValueError, match="images"):
        predictor(images[0], memories[0])
    with pytest.raises(ValueError, match="batch_size"):
        TorchPredictor(predictor.model, batch_size=0)


def test_matches_the_saved_network(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(filters=4, depth=1, head_features=4, head_depth=1, patch_size=PATCH)
    network = IterativeFCN(config).eval()
    path = save_torchscript(network, _metadata(), tmp_path / "tiny.pt")
    predictor = TorchPredictor(load_model(path, device="cpu"), batch_size=2)
    images, memories = _patches(3)
    result = predictor(images, memories)
    with torch.no_grad():
        seg, label, complete = network(torch.from_numpy(np.stack([images, memories], axis=1)))
    np.testing.assert_allclose(result.probabilities, seg[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.label_values, label.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.completeness, complete.numpy(), rtol=1e-5, atol=1e-6)
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
