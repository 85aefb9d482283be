"""Whole-image transfer on the prior: windowed self-attention, the layout, and agreement with tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from instlib.config import PriorConfig
from instlib.data.simulate import colorize, render_fluorescence
from instlib.data.synth import image_rng
from instlib.style import TransferConfig, stylize_images
from instlib.style.attention import WindowedAttnProcessor, window_starts
from instlib.style.imaging import resize
from instlib.style.prior import build_prior
from instlib.style.transfer import layout, model_kind, resolve


@pytest.fixture(scope="module")
def prior():
    """An untrained three-level prior (speed and agreement do not need trained weights)."""
    return build_prior(PriorConfig(resolution=32, channels=(8, 16, 32), width=16))


def _cells(n: int, seed: int, shape=(72, 96)) -> np.ndarray:
    img = colorize(render_fluorescence(n, shape, image_rng(seed, f"cells{n}"))[0], "dapi")
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8) if img.dtype != np.uint8 else img


def test_window_starts_cover_the_length_with_full_windows():
    assert window_starts(20, 8) == [0, 8, 12] and window_starts(16, 8) == [0, 8] and window_starts(5, 8) == [0]


def test_windowed_attention_is_attention_within_each_window():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    h, w, window = 6, 10, 4
    x = torch.randn(2, h * w, 16)
    processor = WindowedAttnProcessor(window)
    processor.grid = (h, w)
    with torch.no_grad():
        out = processor(attn, x).reshape(2, h, w, 16)
        grid = x.reshape(2, h, w, 16)
        for r, c, rows, cols in ((0, 0, slice(0, 4), slice(0, 4)), (2, 6, slice(4, 6), slice(8, 10))):
            # the window starting at (r, c) is attended alone; (2, 6) is the shifted last one in both axes
            alone = AttnProcessor2_0()(attn, grid[:, r:r + window, c:c + window].reshape(2, -1, 16))
            alone = alone.reshape(2, window, window, 16)
            torch.testing.assert_close(out[:, rows, cols], alone[:, rows.start - r:rows.stop - r,
                                                                 cols.start - c:cols.stop - c])
        processor.grid, processor.window = (h, w), 10  # one window holds the grid: plain attention
        torch.testing.assert_close(processor(attn, x), AttnProcessor2_0()(attn, x))


def test_auto_resolution_is_the_whole_image_within_the_budget(prior):
    components, _ = prior
    config = TransferConfig().for_model(model_kind(components))
    assert model_kind(components) == "prior" and config.resolution == "auto" and config.guidance == 1.0
    whole = layout(components, config, 70, 95)
    assert whole.plan is None and whole.windowed and whole.pixel_size == (72, 96)  # the UNet's multiple of 4
    tiles = layout(components, config.updated(max_pixels=48 * 48), 70, 95)
    assert tiles.plan is not None and tiles.plan.tile == 48 and tiles.plan.count > 1
    fixed = layout(components, TransferConfig(resolution=32).for_model("prior"), 70, 95)
    assert fixed.plan.tile == 32 and not fixed.windowed
    assert TransferConfig().for_model("sd").resolution == 512  # SD keeps the reference's tiles


def test_one_pass_over_the_whole_image_per_step(prior):
    components, token = prior
    content = _cells(10, 1, (70, 95))
    shapes = []
    handle = components.unet.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    try:
        out = stylize_images(components, token, [content], [content], TransferConfig(strength=0.5), [0])[0]
    finally:
        handle.remove()
    config = resolve(components, TransferConfig(strength=0.5))
    assert out.shape == content.shape
    assert shapes == [(1, 3, 72, 96)] * (1 + int(config.steps * 0.5))  # inversion + one unguided pass a step


def test_whole_image_and_tiles_agree(prior):
    """Where both run, the whole-image pass and blended tiles give nearly the same image: their difference is
    a small fraction of what another seed changes (the prior is untrained: its noise predictions, and so
    the seams a tile edge leaves, are at their worst)."""
    components, token = prior
    content, style = _cells(10, 1), _cells(20, 2)

    def run(seed, **settings):
        return stylize_images(components, token, [content], [style], TransferConfig(strength=0.5, **settings),
                              [seed])[0].astype(float)

    whole, tiled, other_seed = run(1), run(1, max_pixels=48 * 48), run(2)
    assert np.abs(whole - tiled).mean() < 0.35 * np.abs(whole - other_seed).mean()
    assert np.abs(whole - tiled).mean() > 0  # the tiles did run
    assert np.array_equal(whole, run(1))  # deterministic per seed


def test_whole_image_batches_are_batch_independent(prior):
    components, token = prior
    contents = [_cells(n, 3, (70, 95)) for n in (5, 15)]
    styles = [resize(_cells(9, 4), (40, 40)), _cells(12, 5)]
    config = TransferConfig(strength=0.5)
    together = stylize_images(components, token, contents, styles, config, [1, 2])
    alone = [stylize_images(components, token, [c], [s], config, [k])[0] for c, s, k in zip(contents, styles, (1, 2))]
    for a, b in zip(together, alone):
        assert a.shape == (70, 95, 3) and np.abs(a.astype(int) - b).max() <= 1


def test_bf16_transfer_is_close_to_fp32_and_deterministic():
    """bf16 networks (GPUs, CPUs with bf16 instructions) give nearly the fp32 image: the difference is a small
    fraction of what another seed changes; the same seed gives the same image, and the batch changes only
    rounding."""
    fp32, token = build_prior(PriorConfig(resolution=32, channels=(8, 16, 32), width=16))
    bf16 = build_prior(PriorConfig(resolution=32, channels=(8, 16, 32), width=16))[0].to("cpu", torch.bfloat16)
    contents, styles = [_cells(10, 1), _cells(14, 6)], [_cells(20, 2), _cells(8, 7)]
    config = TransferConfig(strength=0.5)

    def run(components, seeds, n=2):
        return [a.astype(float) for a in stylize_images(components, token, contents[:n], styles[:n], config, seeds)]

    exact, half, other_seed = run(fp32, [1, 2]), run(bf16, [1, 2]), run(fp32, [3, 4])
    for e, h, o in zip(exact, half, other_seed):
        assert 0 < np.abs(e - h).mean() < 0.05 * np.abs(e - o).mean()
    assert all(np.array_equal(a, b) for a, b in zip(half, run(bf16, [1, 2])))
    assert np.abs(run(bf16, [1], n=1)[0] - half[0]).mean() < 0.05 * np.abs(exact[0] - other_seed[0]).mean()


def test_folder_transfer_on_a_prior_records_the_prior_defaults(prior, folders, tmp_path):
    """``style transfer --model PRIOR`` without options: the manifest holds the settings the prior ran with,
    and the folder reads back (a rerun resumes; counting reads its manifest)."""
    from instlib.data.folder import read_manifest
    from instlib.style import (
        load_components,
        save_components,
        save_token,
        transfer_folder,
    )

    components, token = prior
    model = save_components(components, tmp_path / "prior")
    token_file = save_token(token, tmp_path / "token.safetensors")
    loaded = load_components(str(model), device="cpu")
    out = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "out", loaded, progress=False)
    first = (out / "manifest.csv").read_bytes()
    transfer_folder(folders["synhc"], folders["real"], token_file, out, loaded, progress=False)  # all done: resumes
    assert (out / "manifest.csv").read_bytes() == first
    rows = read_manifest(out)
    assert set(rows["resolution"]) == {"auto"} and set(rows["sampler"]) == {"ddim"}
    assert set(rows["guidance"]) == {1.0} and set(rows["preset"]) == {"prior"} and set(rows["steps"]) == {20}
    assert (rows["height"] == 48).all() and (rows["width"] == 64).all()
