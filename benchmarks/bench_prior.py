"""Diffusion-prior throughput: training images/s at 64 and 128 px, and the time to style real-sized images.

Everything is measured side by side in one process on the same random images: training steps of
:func:`instlib.style.prior._loss` (forward + backward + AdamW) at each resolution, fp32 and, on a GPU,
bf16 autocast with channels_last; then :func:`instlib.style.stylize_images` on the untrained prior (speed
does not depend on weight values) for one 600 x 800 and one 768 x 1024 image, two ways:

- ``tiled``: the path before issue 22: 256 px blended tiles, DDIM on a 50-step grid at strength 0.7
  (35 steps), guidance 10 (two UNet passes a step);
- ``new``: the prior's defaults (``TransferConfig()``: the whole image in one pass a step, DDIM on a
  20-step grid, no guidance).

Prints the seconds of each and their ratio. On a GPU the networks run in its half type (bf16 from
compute capability 8.0, fp16 below), on a CPU with bf16 instructions in bf16
(:func:`instlib.runs.device.default_dtype`); the tiled path runs in the dtype it ran in before (fp32 on every
CPU) and the new path is also timed in that dtype.

    python benchmarks/bench_prior.py                     # CPU, 2 threads: training and transfer
    python benchmarks/bench_prior.py --only transfer     # transfer timings only
    python benchmarks/bench_prior.py --steps 20          # more training steps per measurement
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from instlib.config import PriorConfig
from instlib.runs.device import default_dtype, half_dtype
from instlib.style import TransferConfig, stylize_images
from instlib.style.conditioning import encode_prompts
from instlib.style.models import default_device
from instlib.style.prior import _loss, _step_rng, _Trainable, build_prior
from instlib.style.transfer import resolve

SIZES = ((600, 800), (768, 1024))
#: The transfer before issue 22, spelled out (the prior's defaults then were SD's with 256 px tiles).
TILED = TransferConfig(preset="reference", resolution=256, tiling="blend", guidance=10.0, strength=0.7, steps=50,
                       sampler="ddim")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(resolution: int, batch_size: int, steps: int, device: torch.device, fast: bool) -> float:
    """Training crops per second (after one warm-up step)."""
    config = PriorConfig(resolution=resolution, batch_size=batch_size)
    components, token = build_prior(config)
    components.to(device)
    nets = _Trainable(components, token).train().requires_grad_(True)
    components.text_encoder.requires_grad_(False)
    if fast:
        nets.unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(nets.parameters(), lr=config.lr)
    images = [np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8) for i in range(8)]
    with torch.no_grad():
        uncond = encode_prompts(components, [""])
    autocast = torch.autocast(device.type, torch.bfloat16) if fast else contextlib.nullcontext()
    for step in range(steps + 1):
        if step == 1:
            _sync(device)
            start = time.perf_counter()
        rng, g = _step_rng(0, step)
        with autocast:
            loss = _loss(components, nets, images, uncond, config, rng, g)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def transfer_seconds(size: tuple[int, int], config: TransferConfig, device: torch.device,
                     dtype: torch.dtype | None = None) -> float:
    """Seconds to style one ``size`` image with the untrained default prior in ``dtype`` (default: the device's,
    :func:`~instlib.runs.device.default_dtype`), after a small warm-up."""
    components, token = build_prior(PriorConfig())
    components.to(device, dtype or default_dtype(device))
    token.block.to(device)
    rng = np.random.default_rng(0)
    content, style = (rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(2))
    small = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    stylize_images(components, token, [small], [small], config.updated(strength=0.3, steps=4), [0])  # warm-up
    _sync(device)
    start = time.perf_counter()
    stylize_images(components, token, [content], [style], config, [0])
    _sync(device)
    return time.perf_counter() - start


def describe(config: TransferConfig) -> str:
    steps = int(config.steps * config.strength)
    return (f"{config.sampler} {steps} steps, guidance {config.guidance:g}, "
            f"{'whole image' if config.resolution == 'auto' else f'{config.resolution} px tiles'}")


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--only", choices=("train", "transfer"), default=None, help="measure only this")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES), help="image sizes HxW,HxW")
    parser.add_argument("--tile", type=int, default=256, help="tile of the tiled path, in pixels")
    parser.add_argument("--tiled-steps", type=int, default=0,
                        help="time only this many of the tiled path's 35 steps and scale up by UNet passes "
                             "(0: run them all); for slow CPUs, printed as an estimate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = default_device()
    if args.only != "transfer":
        train_rates(args, device)
    if args.only != "train":
        transfer_times(device, [tuple(int(n) for n in hw.split("x")) for hw in args.sizes.split(",")], args.tile,
                       args.tiled_steps)


def passes(config: TransferConfig) -> int:
    """UNet passes per image and tile: the inversion's, then one or two (guidance) per step."""
    return 1 + int(config.steps * config.strength) * (1 if config.guidance == 1.0 else 2)


def tiled_seconds(size: tuple[int, int], config: TransferConfig, device: torch.device, steps: int,
                  dtype: torch.dtype) -> tuple[float, str]:
    """Seconds of the tiled path; with ``steps`` > 0 timed on that many steps and scaled to all of them by UNet
    passes (every pass costs the same: same tiles, same batch)."""
    if not steps:
        return transfer_seconds(size, config, device, dtype), ""
    short = config.updated(strength=steps / config.steps)
    seconds = transfer_seconds(size, short, device, dtype)
    return seconds * passes(config) / passes(short), f" (est. from {steps} steps)"


def transfer_times(device: torch.device, sizes: list[tuple[int, int]], tile: int = 256, tiled_steps: int = 0) -> None:
    """The tiled path (in the dtype it ran in: the GPU's half type, fp32 on every CPU) and the new defaults (in
    the device's dtype, and in fp32 where that differs), side by side, per image size."""
    tiled_config = TILED.updated(resolution=tile)
    new = resolve(build_prior(PriorConfig())[0], TransferConfig())
    before, now = half_dtype(device) or torch.float32, default_dtype(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"transfer on {where}: tiled = {describe(tiled_config)}, {_name(before)}; new = {describe(new)}, "
          f"{_name(now)}" + (f" (and {_name(before)})" if now != before else ""))
    for size in sizes:
        old_s, note = tiled_seconds(size, tiled_config, device, tiled_steps, before)
        new_s = transfer_seconds(size, new, device, now)
        same_dtype = f", new in {_name(before)} {transfer_seconds(size, new, device, before):8.1f} s" if now != before else ""
        print(f"transfer {size[0]} x {size[1]}: tiled {old_s:8.1f} s{note}, new {new_s:8.1f} s{same_dtype}, "
              f"speed-up {old_s / new_s:5.1f}x")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[-1]


def train_rates(args: argparse.Namespace, device: torch.device) -> None:
    """Training crops/s at 64 and 128 px (and bf16 + channels_last on a GPU)."""
    modes = [False, True] if device.type == "cuda" else [False]
    print(f"device {device}, batch {args.batch_size}, {args.steps} timed steps per setting")
    rates = {}
    for fast in modes:
        for res in (64, 128):
            rates[(res, fast)] = train_rate(res, args.batch_size, args.steps, device, fast)
            label = "bf16+channels_last" if fast else "fp32"
            print(f"train {res:>3} px {label:>18}: {rates[(res, fast)]:8.1f} crops/s")
    print(f"ratio 64 px / 128 px (fp32): {rates[(64, False)] / rates[(128, False)]:.2f}")
    if device.type == "cuda":
        print(f"ratio bf16+channels_last / fp32 at 128 px: {rates[(128, True)] / rates[(128, False)]:.2f}")


if __name__ == "__main__":
    main()
