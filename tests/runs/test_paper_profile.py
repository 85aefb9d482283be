"""The paper profile as the authors ran it: their CV, inversion timestep and ImageNet weights, and Syn-HC
drawn from every stain's points, styled after DAPI images."""

from __future__ import annotations

import numpy as np
import pytest
import timm

from instlib.config import SynHCConfig, TransferConfig
from instlib.count import backbone
from instlib.data.folder import list_samples, read_manifest, write_manifest
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.provenance import origins
from instlib.data.selection import ImageFilter
from instlib.data.synth import synthesize_from_points
from instlib.errors import DataError
from instlib.runs.profiles import get_profile
from instlib.style import load_components, pair_styles, transfer_folder
from instlib.style.tokens import new_token, save_token

PAPER = get_profile("paper")


def test_the_paper_profile_is_the_authors_setting():
    assert (PAPER.count.split, PAPER.cv.folds, PAPER.count.recipe) == ("stratified", 5, "authors")
    assert len(set(PAPER.cv.seeds)) == 3  # 5 folds x 3 seeds: enough to tell rows with small gaps apart
    assert PAPER.transfer.reference_timesteps and PAPER.tokens.reference_clip_input
    assert (PAPER.data.stain, PAPER.data.synhc_from) == ("DAPI", "all")
    assert get_profile("paper", **{"count.split": "official"}).count.split == "official"  # still one switch away
    assert get_profile("paper", **{"data.synhc_from": "selection"}).data.synhc_from == "selection"


def test_efficientnet_b0_loads_the_imagenet_weights_torchvision_ships(monkeypatch):
    """timm's ``efficientnet_b0.ra_in1k`` is the checkpoint torchvision converted into IMAGENET1K_V1; a name
    without a tag loads it whatever timm's default tag is."""
    cfg = timm.models.get_pretrained_cfg(backbone.pretrained_name(PAPER.count.model))
    assert cfg.hf_hub_id == "timm/efficientnet_b0.ra_in1k" and cfg.url.endswith("efficientnet_b0_ra-3dd342df.pth")
    made = []
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained, **kw: made.append((name, pretrained)))
    monkeypatch.setattr(backbone, "_weights_cached", lambda name: True)
    backbone.create_backbone("efficientnet_b0", pretrained=True)
    backbone.create_backbone("efficientnet_b0", pretrained=False)
    backbone.create_backbone("efficientnet_b0.ra4_e3600_r224_in1k", pretrained=True)  # a tag given is kept
    backbone.create_backbone("test_efficientnet", pretrained=True)
    assert made == [("efficientnet_b0.ra_in1k", True), ("efficientnet_b0", False),
                    ("efficientnet_b0.ra4_e3600_r224_in1k", True), ("test_efficientnet", True)]


# ---------------------------------------------------------------- Syn-HC from every stain, DAPI-styled

# name -> (stain, cells); F3's marker image has no DAPI image of its field
FIELDS = {"exp_A_F1_DAPI_ND1": ("DAPI", 20), "exp_A_F2_DAPI_ND1": ("DAPI", 6), "exp_A_F4_DAPI_ND1": ("DAPI", 11),
          "exp_A_F1_Cy3_ND1": ("Cy3", 5), "exp_A_F3_Cy3_ND1": ("Cy3", 10)}


@pytest.fixture
def stains(tmp_path):
    """A real folder of two stains (manifest column ``stain``) and Syn-HC drawn from all of it."""
    real = tmp_path / "real"
    rng = np.random.default_rng(0)
    for name, (_, n) in FIELDS.items():
        write_image(real / "images" / f"{name}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        write_points(real / "points" / f"{name}.csv", rng.uniform(2, 30, (n, 2)))
    write_manifest(real, [{"name": k, "count": n, "stain": s} for k, (s, n) in FIELDS.items()])
    synhc = synthesize_from_points(real, tmp_path / "synhc", SynHCConfig(cell_size=4), select=ImageFilter(),
                                   progress=False)
    return real, synhc


def test_a_marker_stain_image_is_styled_after_the_dapi_image_of_its_field(stains):
    real, synhc = stains
    pairs = pair_styles(synhc, list_samples(synhc), real, ImageFilter.of("DAPI"))
    assert {k: v.stem for k, v in pairs.items()} == {
        **{n: n for n, (s, _) in FIELDS.items() if s == "DAPI"},
        "exp_A_F1_Cy3_ND1": "exp_A_F1_DAPI_ND1",  # the same field, although F2's count (6) is nearer its 5
        "exp_A_F3_Cy3_ND1": "exp_A_F4_DAPI_ND1",  # no DAPI image of F3: the nearest count (11 to its 10)
    }
    # without the rule, pairing stays by name
    assert {k: v.stem for k, v in pair_styles(synhc, list_samples(synhc), real).items()} == {n: n for n in FIELDS}


def test_a_stand_in_by_count_needs_the_style_images_points(stains):
    real, synhc = stains
    for f in (real / "points").glob("*DAPI*.csv"):
        f.unlink()
    with pytest.raises(DataError, match="no points for style image 'exp_A_F1_DAPI_ND1'"):
        pair_styles(synhc, list_samples(synhc), real, ImageFilter.of("DAPI"))


def test_inst_styles_every_syn_hc_image_after_a_dapi_image(stains, tmp_path):
    real, synhc = stains
    tiny = load_components("tiny", device="cpu")
    token = save_token(new_token(tiny.hidden_size, base_model="tiny", seed=3), tmp_path / "tok.safetensors")
    out = transfer_folder(synhc, real, token, tmp_path / "inst", tiny, TransferConfig(steps=4, strength=0.5,
                          resolution=32), style_from=ImageFilter.of("DAPI"), progress=False)
    manifest = read_manifest(out).set_index("name")
    assert set(manifest.index) == set(FIELDS)
    assert manifest.loc["exp_A_F3_Cy3_ND1", "style"] == "exp_A_F4_DAPI_ND1"
    # the image drawn from the marker stain's points, and its DAPI style image, are both its origins
    assert origins(out)["exp_A_F3_Cy3_ND1"] == {"exp_A_F3_Cy3_ND1", "exp_A_F4_DAPI_ND1"}
    assert manifest["style"].str.contains("_DAPI_").all()
