"""Style-transfer throughput: the batched pipeline against a loop that mirrors the reference code.

Both run the same model on the same inputs with the same settings, side by side in one process:

- ``batched``: :func:`instlib.style.stylize_images`, ``--batch-size`` images at once, weights in the
  device's default dtype (bf16/fp16 on GPU), one UNet call on ``[uncond; cond]`` per DDIM step;
- ``reference``: one image at a time, fp32 weights under fp16 autocast (on GPU; autocast does nothing
  on a CPU), two UNet calls per DDIM step for guidance, as the issue describes the authors' loop.

FLOPs per image are counted with ``torch.utils.flop_counter`` (matmuls, convolutions, attention);
on a GPU the achieved rate is compared with the card's dense bf16/fp16 peak (``--peak-tflops`` to
override). Without a GPU it runs the ``tiny`` model on the CPU and says so.

    python benchmarks/bench_style.py                                   # CPU: tiny, 128 x 128
    python benchmarks/bench_style.py --model sd14-random --images 32 --batch-size 8   # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from instlib.style import TransferConfig, load_components, stylize_images
from instlib.style.conditioning import encode_prompts, token_embeddings
from instlib.style.imaging import from_pixels, to_pixels
from instlib.style.tokens import new_token
from instlib.style.transfer import (
    adain,
    decode_latents,
    encode_latents,
    invert,
    resolve,
    timesteps,
)

# Dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity).
GPU_PEAKS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
             "L4": 121.0, "A10G": 70.0, "A10": 125.0, "T4": 65.0, "V100": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def reference_image(components, token, content, style, config, seed):
    """One image the way the reference loop does it: batch 1, guidance as two UNet calls per step."""
    cuda = components.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        g = [torch.Generator().manual_seed(seed)]
        sched = components.scheduler.__class__.from_config(components.scheduler.config)
        t_enc, grid = timesteps(sched, config)
        latents = encode_latents(components, to_pixels([content], components.device, components.dtype), g)
        latents = adain(latents, encode_latents(components, to_pixels([style], components.device, components.dtype), g))
        cond = encode_prompts(components, ["*"], token_embeddings(components, [token], [style]))
        uncond = encode_prompts(components, [""])
        latents = invert(components, sched, latents, cond, t_enc, g)
        for t in grid:
            eps_uc = components.unet(latents, t, encoder_hidden_states=uncond).sample
            eps_c = components.unet(latents, t, encoder_hidden_states=cond).sample
            latents = sched.step(eps_uc + config.guidance * (eps_c - eps_uc), t, latents, eta=0.0).prev_sample
        return from_pixels(decode_latents(components, latents))[0]


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_tflops(device, override):
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAKS.items() if k in name), None)


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd14-random" if cuda else "tiny")
    p.add_argument("--resolution", type=int, default=512 if cuda else 128)
    p.add_argument("--images", type=int, default=16 if cuda else 8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--peak-tflops", type=float, default=None, help="Device peak for the utilisation figure.")
    # One CPU thread by default: the tiny model's ops are too small for threads to pay, and on a shared
    # machine spinning OpenMP threads slow both pipelines unevenly, which distorts the ratio.
    p.add_argument("--threads", type=int, default=None if cuda else 1, help="CPU threads (0: PyTorch's choice).")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    components = load_components(args.model)
    device = components.device
    # The reference keeps fp32 weights and autocasts; on a CPU both pipelines share the fp32 weights.
    ref_components = components
    if components.dtype != torch.float32:
        ref_components = copy.deepcopy(components).to(dtype=torch.float32)
    token = new_token(components.hidden_size, base_model=args.model)
    token.block.to(device)
    # The reference's DDIM with guidance 10 on any model (a prior's defaults would skip guidance).
    config = resolve(components, TransferConfig(preset="reference", strength=args.strength, steps=args.steps,
                                                resolution=args.resolution))
    rng = np.random.default_rng(0)
    shape = (args.resolution, args.resolution, 3)
    contents = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(args.images)]
    styles = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(args.images)]
    b = args.batch_size

    def batched(lo, hi):
        return stylize_images(components, token, contents[lo:hi], styles[lo:hi], config, list(range(lo, hi)))

    def reference(i):
        return reference_image(ref_components, token, contents[i], styles[i], config, i)

    # Warm-up runs double as FLOP counts (counting slows them down, so they are not timed).
    flops_batched = flops_of(lambda: batched(0, b)) / b
    flops_reference = flops_of(lambda: reference(0))
    t_batched = timed(lambda: [batched(i, min(i + b, args.images)) for i in range(0, args.images, b)], device)
    t_reference = timed(lambda: [reference(i) for i in range(args.images)], device)

    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if cuda else f"CPU ({threads} thread{'s' * (threads != 1)})"
    print(f"model {args.model}, {args.resolution} x {args.resolution}, {args.images} images, strength "
          f"{args.strength}, {args.steps} DDIM steps ({int(args.steps * args.strength)} run), guidance 10, on {where}")
    if not cuda:
        print("no GPU here: these are CPU figures for the tiny model, not SD v1.4 throughput")
    peak = peak_tflops(device, args.peak_tflops)
    rows = [("batched", f"batch {b}, {str(components.dtype).split('.')[-1]}", t_batched, flops_batched),
            ("reference", "batch 1, fp32 + fp16 autocast" if cuda else "batch 1, fp32", t_reference, flops_reference)]
    print(f"{'pipeline':10s} {'precision':32s} {'images/s':>9s} {'GFLOP/img':>10s} {'TFLOP/s':>8s} {'% peak':>7s}")
    for name, how, seconds, flops in rows:
        rate = args.images / seconds
        achieved = flops * rate / 1e12
        share = f"{100 * achieved / peak:6.1f}%" if peak else "    n/a"
        print(f"{name:10s} {how:32s} {rate:9.3f} {flops / 1e9:10.2f} {achieved:8.3f} {share}")
    print(f"speed-up of batched over reference: {t_reference / t_batched:.2f}x")
    if not peak:
        print("utilisation: no peak figure for this device (pass --peak-tflops)")


if __name__ == "__main__":
    main()
