"""Diffusion-prior throughput: training images/s at 64 and 128 px, and transfer images/s with the prior.

Everything is measured side by side in one process on the same random images: training steps of
:func:`instlib.style.prior._loss` (forward + backward + AdamW) at each resolution, fp32 and, on a GPU,
bf16 autocast with channels_last; then :func:`instlib.style.stylize_images` on the untrained prior
(speed does not depend on weight values). Prints throughputs and the ratios between settings.

    python benchmarks/bench_prior.py                 # CPU, default sizes
    python benchmarks/bench_prior.py --steps 20      # more steps per measurement
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from instlib.config import PriorConfig
from instlib.style import TransferConfig, stylize_images
from instlib.style.conditioning import encode_prompts
from instlib.style.models import default_device
from instlib.style.prior import _loss, _step_rng, _Trainable, build_prior


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


def transfer_rate(resolution: int, images: int, device: torch.device) -> float:
    """Styled images per second at the prior's resolution (strength 0.7, 50-step grid, guidance 10)."""
    components, token = build_prior(PriorConfig(resolution=resolution))
    components.to(device)
    token.block.to(device)
    rng = np.random.default_rng(0)
    contents = [rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8) for _ in range(images)]
    config = TransferConfig(resolution=resolution)
    stylize_images(components, token, contents[:1], contents[:1], config, [0])  # warm-up
    _sync(device)
    start = time.perf_counter()
    stylize_images(components, token, contents, contents, config, list(range(images)))
    _sync(device)
    return images / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=4, help="images per transfer measurement")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = default_device()
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
    print(f"transfer 64 px: {transfer_rate(64, args.images, device):.2f} images/s (strength 0.7, guidance 10)")


if __name__ == "__main__":
    main()
