"""The model: heads, density geometry, files with metadata, and clear errors."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from instlib.count import backbone as backbone_mod
from instlib.count.grid import grid_to_pixels, pool_to_grid
from instlib.count.model import CountModel, load_model, read_spec, save_model
from instlib.count.spec import FORMAT, ModelSpec
from instlib.data.tensorfile import write_tensors
from instlib.errors import InstlibError


def _model(**kw) -> CountModel:
    torch.manual_seed(0)
    return CountModel(ModelSpec(backbone="test_efficientnet", crop_size=48, **kw)).eval()


def test_heads_and_shapes():
    m = _model(density=True)
    count, density = m(torch.rand(3, 3, 48, 48))
    assert count.shape == (3,) and density.shape[:2] == (3, 1) and (density >= 0).all()
    assert _model()(torch.rand(2, 3, 48, 48))[1] is None


def test_backbones_whose_classifier_has_its_own_head_layers():
    # MobileNetV3 keeps a conv_head (288 -> 1024 channels) outside its feature extractor.
    torch.manual_seed(0)
    m = CountModel(ModelSpec(backbone="mobilenetv3_small_050", crop_size=64, density=True)).eval()
    count, density = m(torch.rand(2, 3, 64, 64))
    assert count.shape == (2,) and density.shape[:2] == (2, 1)


@pytest.mark.parametrize("size,grid", [(48, (2, 2)), (200, (7, 7)), (64, (3, 5))])
def test_grid_pooling_partitions_pixels_exactly(size, grid):
    maps = torch.rand(2, 1, size, size)
    cells = pool_to_grid(maps, grid)
    assert cells.shape == (2, 1, *grid)
    assert torch.allclose(cells.sum(dim=(1, 2, 3)), maps.sum(dim=(1, 2, 3)), rtol=1e-5)
    back = grid_to_pixels(cells, (size, size))
    assert torch.allclose(back.sum(dim=(1, 2, 3)), maps.sum(dim=(1, 2, 3)), rtol=1e-5)
    assert torch.allclose(pool_to_grid(back, grid), cells, rtol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    m = _model(density=True, channels=(1,), mean=(0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2))
    path = save_model(m, tmp_path / "model.safetensors")
    spec = read_spec(path)
    assert spec == m.spec
    again = load_model(path, backbone="test_efficientnet").eval()
    x = torch.rand(2, 3, 48, 48)
    assert torch.allclose(again(x)[0], m(x)[0]) and torch.allclose(again(x)[1], m(x)[1])


def test_a_model_file_of_another_backbone_is_refused(tmp_path):
    path = save_model(_model(), tmp_path / "model.safetensors")
    with pytest.raises(InstlibError, match="holds a 'test_efficientnet' model, not 'efficientnet_b0'") as err:
        load_model(path, backbone="efficientnet_b0")
    assert err.value.path == path
    # Weights of one architecture under another's name.
    spec = ModelSpec(backbone="test_resnet", crop_size=48)
    forged = tmp_path / "forged.safetensors"
    write_tensors(forged, load_file(str(path)), {"spec": spec.to_json()}, FORMAT)  # a consistent checksum
    with pytest.raises(InstlibError, match="do not fit its declared backbone 'test_resnet'") as err:
        load_model(forged)
    assert err.value.path == forged


def test_files_that_are_not_counting_models(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(InstlibError, match="not an instlib.count/2 file"):
        load_model(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InstlibError, match="is not a readable safetensors file"):
        load_model(junk)
    with pytest.raises(InstlibError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")


def test_pretrained_offline_fails_at_once(monkeypatch):
    monkeypatch.setattr(backbone_mod, "_weights_cached", lambda name: False)
    monkeypatch.setattr(backbone_mod, "_hub_reachable", lambda timeout=3.0: False)

    def no_download(*args, **kwargs):  # a download attempt would hang until the hub's timeout
        raise AssertionError("timm.create_model was called")

    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(InstlibError, match="not in the local cache.*--no-pretrained"):
        CountModel(ModelSpec(backbone="efficientnet_b0"), pretrained=True)


def test_hub_offline_setting_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert backbone_mod._hub_reachable() is False


def test_unknown_backbone():
    with pytest.raises(InstlibError, match="is not a timm model"):
        CountModel(ModelSpec(backbone="efficientnet_b99"))


def test_loss_uses_the_map_sums():
    m = _model(density=True).train()
    x = torch.rand(4, 3, 48, 48)
    maps = torch.zeros(4, 1, 48, 48)
    maps[:, 0, 10, 10] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    loss = m.loss(x, maps)
    loss.backward()
    assert torch.isfinite(loss) and m.net.head.weight.grad is not None and m.net.density_head.weight.grad is not None
