"""The encoders trained from scratch: built by name, usable by both heads, saved and reloaded exactly."""

from __future__ import annotations

import pytest
import torch

from instlib.count.backbone import check_backbone, create_backbone
from instlib.count.encoders import ENCODERS
from instlib.count.model import CountModel, load_model, save_model
from instlib.count.spec import ModelSpec
from instlib.errors import InstlibError


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_each_encoder_gives_timms_feature_interface(name):
    enc = create_backbone(name, pretrained=False, features_only=True)
    feats = enc(torch.rand(2, 3, 48, 64))
    assert [f.shape[1] for f in feats] == enc.feature_info.channels() == list(ENCODERS[name])
    assert [48 // f.shape[2] for f in feats] == enc.feature_info.reduction() == [1, 2, 4, 8]
    last = create_backbone(name, pretrained=False).forward_features(torch.rand(2, 3, 48, 64))
    assert last.shape == (2, ENCODERS[name][-1], 6, 8)


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("head", ["density", "regression"])
def test_a_saved_model_of_each_reloads_and_predicts_identically(name, head, tmp_path):
    torch.manual_seed(0)
    model = CountModel(ModelSpec(backbone=name, head=head, crop_size=32)).eval()
    x = torch.rand(3, 3, 32, 32)
    count, density = model(x)
    assert count.shape == (3,) and (density is not None) == (head == "density")
    again = load_model(save_model(model, tmp_path / "m.safetensors")).eval()
    torch.testing.assert_close(again(x)[0], count, rtol=0, atol=0)


def test_encoders_have_no_imagenet_weights():
    with pytest.raises(InstlibError, match="trained from scratch.*--no-pretrained"):
        check_backbone("unet16", pretrained=True)
    with pytest.raises(InstlibError, match="nor one of unet16"):
        check_backbone("no-such-net", pretrained=False)


def test_the_default_encoder_is_efficientnet_with_imagenet_weights_and_unet16_from_scratch():
    from instlib.config.count import TrainConfig

    assert TrainConfig().backbone == "efficientnet_b0"
    scratch = TrainConfig(pretrained=False)
    assert scratch.model == "auto" and scratch.backbone == "unet16"
    assert scratch.updated(pretrained=True).backbone == "efficientnet_b0"  # auto follows the weights
    assert TrainConfig(model="unet32", pretrained=False).backbone == "unet32"
    check_backbone(scratch.backbone, scratch.pretrained)
