"""The density-map counter: targets, the model, whole-image maps, mixing, files and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from torch import nn
from typer.testing import CliRunner

from instlib import cli
from instlib.config import TrainConfig
from instlib.count import bank as bank_mod
from instlib.count import inputs, loop
from instlib.count import train as train_mod
from instlib.count.bank import ImageBank, cell_sigma, load_bank, scale_intensity
from instlib.count.batches import box_counts, density_targets, dot_maps, make_batch
from instlib.count.mix import MIXES, cutmix, half_area_masks, pseudo_label
from instlib.count.model import CountModel, load_model, save_model
from instlib.count.predict import (blend_window, count_bank, density_maps as predict_maps, tile_counts, tile_starts,
                                   true_tile_counts)
from instlib.count.spec import ModelSpec
from instlib.count.train import train_run
from instlib.data.folder import list_samples
from instlib.errors import InstlibError
from instlib.runs.figures import density_figure

from .conftest import tiny_config


def _bank(points: list[np.ndarray], shape=(60, 70)) -> ImageBank:
    images = [torch.zeros(1, *shape, dtype=torch.uint8) for _ in points]
    offsets = torch.tensor([0, *np.cumsum([len(p) for p in points])], dtype=torch.int64)
    return ImageBank([f"i{k}" for k in range(len(points))], [None] * len(points), images,
                     torch.from_numpy(np.concatenate(points)), offsets)


def _density_model(**kw) -> CountModel:
    torch.manual_seed(0)
    return CountModel(ModelSpec(backbone="test_efficientnet", crop_size=48, head="density", **kw)).eval()


def test_density_targets_sum_to_the_box_counts_with_cells_on_the_borders():
    # Points on the box edges and corners, and one just outside: Gaussians cut by the border still count 1.
    pts = np.array([[0.2, 0.3], [31.9, 5.0], [10.0, 31.99], [31.5, 31.5], [15.0, 15.0], [32.5, 10.0], [-0.0, 20.0]])
    bank = _bank([pts])
    idx = torch.zeros(3, dtype=torch.int64)
    tops, lefts = torch.tensor([0, 0, 5]), torch.tensor([0, 1, 3])
    maps = density_targets(bank, idx, tops, lefts, 32, sigma=4.0)
    counts = box_counts(bank, idx, tops, lefts, 32)
    assert counts.tolist() == [6.0, 5.0, 5.0]
    assert torch.allclose(maps.sum(dim=(1, 2, 3)), counts, atol=1e-4)
    assert (maps >= 0).all()
    # Spread out, not dots: the peak of a 4-px Gaussian holds about 1 / (2 pi 16) of a cell.
    assert maps.max() < 0.05 and (maps > 0).float().mean() > 0.3
    # Same total per box as the dot maps the regression head trains on.
    assert torch.allclose(maps.sum(dim=(1, 2, 3)), dot_maps(bank, idx, tops, lefts, 32).sum(dim=(1, 2, 3)), atol=1e-4)


def test_training_batches_carry_density_targets(folders):
    bank = load_bank(list_samples(folders["real"]))
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(8)
    dots = make_batch(bank, idx, 48, torch.Generator().manual_seed(0))
    dens = make_batch(bank, idx, 48, gen, sigma=3.0)
    assert torch.allclose(dens.counts, dots.counts, atol=1e-4)  # same boxes, same flips: same counts
    assert dens.maps.max() < 1 and dots.maps.max() >= 1


def test_density_model_outputs_a_non_negative_map_whose_sum_is_the_count():
    m = _density_model()
    count, density = m(torch.rand(3, 3, 48, 48))
    assert density.shape == (3, 1, 24, 24) and (density >= 0).all()  # stride 2
    assert torch.allclose(count, density.sum(dim=(1, 2, 3)))
    assert _density_model(out_stride=4)(torch.rand(1, 3, 48, 48))[1].shape == (1, 1, 12, 12)
    with pytest.raises(ValueError, match="out_stride 3"):
        _density_model(out_stride=3)


def test_init_count_sets_the_starting_total_and_the_loss_trains_the_map():
    m = _density_model().train()
    m.init_count(7.0)
    m.eval()
    count, _ = m(torch.rand(2, 3, 48, 48))
    assert torch.allclose(count, torch.full((2,), 7.0), rtol=1e-3)
    m.train()
    maps = torch.zeros(2, 1, 48, 48)
    maps[:, 0, 20:24, 20:24] = 1 / 16
    loss = m.loss(torch.rand(2, 3, 48, 48), maps)
    loss.backward()
    assert loss > 0 and m.net.out[-1].weight.grad.abs().sum() > 0


def test_the_loss_charges_the_crop_counts_error_on_top_of_the_pixel_error():
    net = _density_model().net
    target = torch.zeros(2, 1, 48, 48)
    target[:, 0, 20:24, 20:24] = 3 / 16  # three cells per crop
    grid = target.view(2, 1, 24, 2, 24, 2).sum(dim=(3, 5))  # the stride-2 output grid
    exact = net.loss(grid.sum(dim=(1, 2, 3)), grid, target)
    assert exact.item() == pytest.approx(0.0, abs=1e-9)
    moved = torch.roll(grid, 6, dims=-1)  # the same three cells elsewhere: only the pixel term charges
    pixel_only = net.loss(moved.sum(dim=(1, 2, 3)), moved, target).item()
    expected_pixel = torch.mean((moved * net.scale - grid * net.scale) ** 2).item()
    assert pixel_only == pytest.approx(expected_pixel, rel=1e-5)
    more = grid * 4 / 3  # four cells instead of three: the count term adds count_weight x 1 cell
    expected = torch.mean((more * net.scale - grid * net.scale) ** 2).item() + net.count_weight * 1.0
    assert net.loss(more.sum(dim=(1, 2, 3)), more, target).item() == pytest.approx(expected, rel=1e-5)
    assert _density_model(count_weight=0.0).net.loss(more.sum(dim=(1, 2, 3)), more, target).item() == pytest.approx(
        expected - net.count_weight, rel=1e-5)


def test_unknown_head_is_refused():
    with pytest.raises(InstlibError, match="unknown counting head 'dots'"):
        ModelSpec(head="dots")
    with pytest.raises(InstlibError, match="unknown counting head"):
        tiny_config(head="dots")


@pytest.mark.parametrize("length,size,overlap", [(100, 48, 12), (48, 48, 12), (30, 48, 12), (200, 48, 0)])
def test_tiles_cover_the_axis_and_overlap_enough(length, size, overlap):
    starts = tile_starts(length, size, overlap)
    assert starts[0] == 0 and starts[-1] + size >= length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))
    assert (blend_window(size, overlap) > 0).all()


class _Flat(nn.Module):
    """A stand-in density model predicting exactly one cell per pixel."""

    def __init__(self):
        super().__init__()
        self.spec = ModelSpec(crop_size=48, head="density")
        self.w = nn.Parameter(torch.zeros(1))

    def density_map(self, x):
        return torch.ones(len(x), 1, *x.shape[-2:])


def test_blended_tiles_count_nothing_twice():
    bank = ImageBank(["a", "b"], [None, None], [torch.zeros(3, 100, 130, dtype=torch.uint8),
                                                 torch.zeros(1, 30, 40, dtype=torch.uint8)], None, None)
    maps = predict_maps(_Flat(), bank, overlap=12, channels_last=False)
    assert [m.shape for m in maps] == [(100, 130), (30, 40)]
    # Overlaps are averaged, not added; padding past the border of a small image is dropped.
    assert np.allclose(maps[0], 1.0) and np.allclose(maps[1], 1.0)


def test_tiled_whole_image_counts_equal_the_maps_sums(folders):
    bank = load_bank(list_samples(folders["real"])[:3])
    m = _density_model()
    m.init_count(5.0)
    whole, center = count_bank(m, bank, channels_last=False)
    maps = predict_maps(m, bank, channels_last=False)
    assert [mp.shape for mp in maps] == [tuple(im.shape[1:]) for im in bank.images]
    assert np.allclose(whole, [mp.sum(dtype=np.float64) for mp in maps], rtol=1e-6)
    assert (whole > 0).all() and center.shape == (3,)


def test_tile_counts_grid_each_image_and_sum_to_its_count(folders):
    bank = load_bank(list_samples(folders["real"])[:3])  # 96 x 112 images: a 2 x 3 grid of 48 px tiles
    truth = true_tile_counts(bank, 48)
    assert [t.shape for t in truth] == [(2, 3)] * 3
    assert [t.sum() for t in truth] == bank.counts().tolist()  # every point in exactly one tile
    m = _density_model()
    m.init_count(5.0)
    grids = tile_counts(m, bank, channels_last=False)
    maps = predict_maps(m, bank, channels_last=False)
    assert [g.shape for g in grids] == [(2, 3)] * 3
    assert np.allclose([g.sum() for g in grids], [mp.sum(dtype=np.float64) for mp in maps], rtol=1e-6)
    assert np.allclose(grids[0][0, 0], maps[0][:48, :48].sum(dtype=np.float64), rtol=1e-6)
    regressor = CountModel(ModelSpec(backbone="test_efficientnet", crop_size=48)).eval()
    assert [g.shape for g in tile_counts(regressor, bank, channels_last=False)] == [(2, 3)] * 3


def test_validation_scores_tiles_so_errors_do_not_cancel_across_an_image(monkeypatch):
    # One 40 x 80 image, two 40 px tiles: 3 cells left, 1 right. A model that swaps them counts the
    # whole image right (4) but every tile wrong by 2; validation must see the 2.
    bank = _bank([np.array([[5.0, 5.0], [10.0, 20.0], [30.0, 30.0], [60.0, 10.0]])], shape=(40, 80))
    monkeypatch.setattr(loop, "tile_counts", lambda *a, **k: [np.array([[1.0, 3.0]])])
    config = TrainConfig(crop_size=40)
    assert loop.validate(None, bank, config, torch.device("cpu")) == pytest.approx(2.0)


def test_a_saved_density_model_predicts_identically_after_reload(folders, tmp_path):
    bank = load_bank(list_samples(folders["test"])[:2])
    m = _density_model(intensity_percentile=99.0, sigma=3.0)
    m.init_count(4.0)
    with torch.no_grad():  # make the weights differ from a fresh initialisation
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_model(m, tmp_path / "model.safetensors")
    again = load_model(path).eval()
    assert again.spec == m.spec and again.spec.head == "density"
    a, b = count_bank(m, bank, channels_last=False), count_bank(again, bank, channels_last=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_cutmix_of_density_targets_conserves_sums(folders):
    bank = load_bank(list_samples(folders["real"]))
    gen = torch.Generator().manual_seed(3)
    target = make_batch(bank, torch.arange(8), 48, gen, sigma=4.0)
    source = make_batch(bank, torch.arange(8, 16), 48, gen, sigma=4.0)
    mask = half_area_masks(8, 48, gen, prob=1.0)
    mixed = cutmix(target, source, mask)
    parts = (mask * source.maps).sum(dim=(1, 2, 3)) + ((1 - mask) * target.maps).sum(dim=(1, 2, 3))
    assert torch.allclose(mixed.counts, parts, atol=1e-5)
    # A full mask gives the source's count, an empty one the target's.
    assert torch.allclose(cutmix(target, source, torch.ones_like(mask)).counts, source.counts)
    assert torch.allclose(cutmix(target, source, torch.zeros_like(mask)).counts, target.counts)


def test_intensity_scaling_brings_images_to_one_brightness():
    dim = torch.full((1, 50, 50), 10, dtype=torch.uint8)
    dim[0, :5, :5] = 40
    bright = dim * 4
    bank = ImageBank(["d", "b"], [None, None], [dim, bright], None, None)
    scaled = scale_intensity(bank, 100.0)
    assert torch.equal(scaled.images[0], scaled.images[1])
    assert int(scaled.images[0].max()) == 255 and int(scaled.images[0].min()) == 64
    assert scale_intensity(bank, None) is bank


def test_density_run_end_to_end_and_predict_maps(folders, tmp_path):
    config = tiny_config(head="density", sigma=3.0, epochs=2, crops_per_epoch=16, intensity_percentile=99.5)
    metrics = train_run([folders["real"]], folders["test"], tmp_path / "run", config, progress=False)
    assert np.isfinite(metrics["mae"]) and "density map from overlapping 48x48 tiles" in metrics["evaluation"]
    assert load_model(tmp_path / "run" / "model.safetensors").spec.head == "density"
    result = CliRunner().invoke(cli.app, ["count", "predict", "--model", str(tmp_path / "run"), "--data",
                                          str(folders["test"]), "--out", str(tmp_path / "p.csv"),
                                          "--maps", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "p.csv")
    run_pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert np.allclose(df["pred"], run_pred["pred"], rtol=1e-5)
    for name, pred in zip(df["name"], df["pred"]):
        m = tifffile.imread(tmp_path / "maps" / f"{name}.tiff")
        assert m.dtype == np.float32 and m.shape == (96, 112)
        assert np.isclose(m.sum(dtype=np.float64), pred, rtol=1e-5)
    fig = density_figure(folders["test"], tmp_path / "maps", list(df["name"][:2]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[2] == f"predicted density: sum {df['pred'][0]:.1f}" and titles[1].startswith("true: ")


def _disk_bank(radius: float, n: int = 2) -> ImageBank:
    """Images of bright disks of ``radius`` at their points, like nuclei, on a dark background."""
    rng = np.random.default_rng(0)
    points = [rng.uniform(20, 140, size=(8, 2)) for _ in range(n)]
    yy, xx = np.mgrid[:160, :160]
    images = [torch.from_numpy(np.stack([(np.min([np.hypot(xx - x, yy - y) for x, y in pts], axis=0) <= radius)
                                         .astype(np.uint8) * 200] * 3)) for pts in points]
    offsets = torch.tensor([0, *np.cumsum([len(p) for p in points])], dtype=torch.int64)
    return ImageBank([f"d{k}" for k in range(n)], [None] * n, images, torch.from_numpy(np.concatenate(points)), offsets)


def test_auto_sigma_is_the_blob_scale_of_the_cells():
    # A disk of radius r has its normalised-LoG peak at r / sqrt(2): the targets are as wide as the cells.
    for radius in (4.0, 9.0):
        assert cell_sigma(_disk_bank(radius)) == pytest.approx(radius / np.sqrt(2), rel=0.25)
    assert cell_sigma(_bank([np.zeros((0, 2))])) is None


def test_each_image_is_measured_once_however_many_runs_ask(monkeypatch):
    calls = []
    monkeypatch.setattr(bank_mod, "cell_diameter", lambda gray, points: calls.append(len(points)) or 12.0)
    monkeypatch.setattr(bank_mod, "_DIAMETERS", {})
    bank = _disk_bank(4.0, n=3)
    assert cell_sigma(bank) == pytest.approx(12.0 / (2 * np.sqrt(2)))
    assert cell_sigma(bank.subset([2, 0])) == cell_sigma(bank.subset([1])) == cell_sigma(bank)
    assert calls == [8, 8, 8]  # three images, each measured once


def test_a_run_measures_sigma_on_its_real_training_images(folders, tmp_path):
    config = tiny_config(head="density", epochs=1, crops_per_epoch=8)
    assert config.sigma == "auto"
    metrics = train_run([folders["real"]], folders["test"], tmp_path / "run", config, progress=False)
    spec = load_model(tmp_path / "run" / "model.safetensors").spec
    data = inputs.load_run_data([folders["real"]], folders["test"], config)
    assert spec.sigma == metrics["produced_by"]["config"]["sigma"] == round(0.5 * cell_sigma(data.train), 2)
    with pytest.raises(InstlibError, match="sigma must be"):
        tiny_config(sigma="wide")
    empty = _bank([np.zeros((0, 2))])
    empty.paths = [tmp_path / "real" / "images" / "i0.png"]
    with pytest.raises(InstlibError, match=f"{tmp_path / 'real' / 'images'}: .*no annotated cells.*--sigma"):
        train_mod._resolve_sigma(config, empty)


def test_predict_maps_needs_a_density_model(folders, tmp_path):
    path = save_model(CountModel(ModelSpec(backbone="test_efficientnet", crop_size=48)), tmp_path / "m.safetensors")
    result = CliRunner().invoke(cli.app, ["count", "predict", "--model", str(path), "--data", str(folders["test"]),
                                          "--out", str(tmp_path / "p.csv"), "--maps", str(tmp_path / "maps")])
    assert result.exit_code != 0 and "makes no density maps" in str(result.exception or result.output)


def test_dacs_pseudo_labels_come_from_the_density_map(folders):
    bank = load_bank(list_samples(folders["real"]))
    gen = torch.Generator().manual_seed(0)
    model = _density_model()
    model.init_count(3.0)
    target = make_batch(bank.without_labels(), torch.arange(4), 48, gen)
    source = make_batch(bank, torch.arange(4, 8), 48, gen, sigma=4.0)
    pseudo = pseudo_label(model, target.images)
    assert torch.allclose(pseudo.sum(dim=(1, 2, 3)), model(target.images)[0], rtol=1e-5)
    loss = MIXES["dacs"].loss(model.train(), source, target, gen, 1.0)
    assert torch.isfinite(loss) and loss > 0


def test_an_epoch_is_a_number_of_crops_whatever_the_number_of_images():
    config = tiny_config(crops_per_epoch=128, batch_size=8)
    assert loop._steps(10, config) == loop._steps(1000, config) == 16
    passes = tiny_config(crops_per_epoch=0, crops_per_image=2, batch_size=8)
    assert loop._steps(10, passes) == 3 and loop._steps(1000, passes) == 250
    assert TrainConfig().crops_per_epoch > 0  # the default trains by crops, not passes
    with pytest.raises(InstlibError, match="crops_per_epoch"):
        tiny_config(crops_per_epoch=-1)
