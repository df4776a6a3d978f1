"""IterativeFCN: shapes and ranges of the three outputs, configuration checks, scripting, export,
gradient flow, and the paper's layout (constant filters, 48-feature recognition paths)."""
import warnings

import pytest
import torch
from torch import nn

from vertebra_traversal.network import (IterativeFCN, NetworkConfig, compact_config, count_parameters,
                                        paper_config)

torch.set_num_threads(1)
TINY = NetworkConfig(filters=4, depth=2, head_features=6, head_depth=1, patch_size=(16, 16, 16))


@pytest.fixture(scope="module")
def tiny() -> IterativeFCN:
    torch.manual_seed(0)
    return IterativeFCN(TINY).eval()


def _input(batch: int = 2, size=(16, 16, 16)) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn((batch, 2) + tuple(size))


def test_outputs_have_patch_shape_and_valid_ranges(tiny):
    x = _input(3)
    seg, label, complete = tiny(x)
    assert seg.shape == (3, 1, 16, 16, 16)
    assert label.shape == (3,) and complete.shape == (3,)
    seg, label, complete = seg.detach(), label.detach(), complete.detach()
    assert float(seg.min()) >= 0.0 and float(seg.max()) <= 1.0
    assert float(label.min()) >= 0.0
    assert float(complete.min()) >= 0.0 and float(complete.max()) <= 1.0


def test_forward_is_sigmoid_of_logits_and_label_is_relu(tiny):
    x = _input(2)
    seg, label, complete = tiny(x)
    seg_logits, label2, complete_logit = tiny.forward_logits(x)
    torch.testing.assert_close(seg, torch.sigmoid(seg_logits))
    torch.testing.assert_close(complete, torch.sigmoid(complete_logit))
    torch.testing.assert_close(label, label2)
    # force a negative pre-activation: the ReLU must clamp the label to exactly 0 (paper §3.4)
    model = IterativeFCN(TINY).eval()
    with torch.no_grad():
        model.label_path.dense.weight.zero_()
        model.label_path.dense.bias.fill_(-3.0)
    assert torch.equal(model(x)[1], torch.zeros(2))


def test_batch_items_are_independent_in_eval_mode(tiny):
    x = _input(2)
    together = tiny(x)
    alone = tiny(x[1:2])
    for a, b in zip(together, alone):
        torch.testing.assert_close(a[1:2], b, rtol=1e-4, atol=1e-5)


def test_constant_filters_and_recognition_paths_of_48_features():
    config = NetworkConfig(filters=12, depth=2, head_features=48, head_depth=1, patch_size=(16, 16, 16))
    model = IterativeFCN(config)
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv3d) and "path" not in name]
    assert convs[0].in_channels == 2
    assert {c.out_channels for c in convs[:-1]} == {12}  # constant number of filters (paper §3.1)
    assert convs[-1].out_channels == 1  # the cube before S has one channel (Fig. 1)
    for path in (model.label_path, model.complete_path):
        assert {m.out_channels for m in path.modules() if isinstance(m, nn.Conv3d)} == {48}
        assert (path.dense.in_features, path.dense.out_features) == (48, 1)
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    plain = IterativeFCN(NetworkConfig(filters=4, depth=1, head_depth=1, patch_size=(8, 8, 8), batch_norm=False))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in plain.modules())


def test_gradients_reach_every_parameter_from_all_three_outputs():
    torch.manual_seed(2)
    model = IterativeFCN(TINY).train()
    seg_logits, label, complete_logit = model.forward_logits(_input(2))
    assert float(label.detach().min()) > 0.0  # the label unit starts active (LABEL_BIAS_INIT)
    target = torch.zeros_like(seg_logits)
    loss = (nn.functional.binary_cross_entropy_with_logits(seg_logits, target) + (label - 5.0).abs().mean()
            + nn.functional.binary_cross_entropy_with_logits(complete_logit, torch.ones(2)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert missing == []


def test_torchscript_matches_eager_for_forward_and_forward_logits(tiny):
    x = _input(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(tiny)
    for a, b in zip(scripted(x), tiny(x)):
        torch.testing.assert_close(a, b)
    for a, b in zip(scripted.forward_logits(x), tiny.forward_logits(x)):
        torch.testing.assert_close(a, b)


def test_torch_export_with_dynamic_batch_matches_eager(tiny):
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(tiny, (_input(2),), dynamic_shapes={"x": {0: batch}})
    exported = program.module()
    for size in (1, 3):
        x = _input(size)
        for a, b in zip(exported(x), tiny(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("field, value", [("filters", 0), ("depth", -1), ("head_features", 2.5),
                                          ("in_channels", True), ("head_depth", 0)])
def test_invalid_integer_fields_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        NetworkConfig(**{field: value})


def test_patch_size_must_allow_every_pooling_step():
    with pytest.raises(ValueError, match="patch_size"):
        NetworkConfig(depth=3, head_depth=3, patch_size=(64, 64, 32))  # 32 / 2**6 is not whole
    with pytest.raises(ValueError, match="patch_size"):
        NetworkConfig(patch_size=(128, 128))
    assert NetworkConfig(depth=3, head_depth=3, patch_size=[64, 128, 64]).patch_size == (64, 128, 64)


def test_config_json_round_trip_and_unknown_fields():
    config = NetworkConfig(filters=7, depth=2, head_features=5, head_depth=2, patch_size=(32, 16, 16),
                           batch_norm=False)
    assert NetworkConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_json({**config.to_json(), "dropout": 0.5})


def test_presets_cover_the_same_field_of_view_at_1_and_2_mm():
    paper, compact = paper_config(), compact_config()
    assert paper.filters == 84 and paper.head_features == 48 and paper.patch_size == (128, 128, 128)
    assert compact.patch_size == (48, 48, 48)  # x 2.5 mm = 120 mm, close to the paper's 128 mm at 1 mm
    assert count_parameters(IterativeFCN(compact)) < count_parameters(IterativeFCN(paper))
