"""Syn-HC throughput: instlib's vectorised generator against a straightforward implementation.

The baseline follows the reference code's structure: float64 noise, then one ellipse draw call per
cell (``skimage.draw.ellipse``), then the contrast jitter. Both run side by side in one process on
the same point sets (800 x 800, 100-300 cells), in memory and including PNG writing.

    python benchmarks/bench_synth.py [--images 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import ellipse

from instlib.data.images import write_image
from instlib.data.synth import SynHCConfig, render_synhc


def render_baseline(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                    c: SynHCConfig = SynHCConfig()) -> np.ndarray:
    """The algorithm drawn the straightforward way: float64 noise, one draw call per cell."""
    img = rng.normal(rng.uniform(*c.background_mean), c.background_std, size=shape)  # float64
    for x, y in points:
        a, b = rng.uniform(c.axis_fraction[0] * c.cell_size, c.axis_fraction[1] * c.cell_size, size=2)
        angle = rng.uniform(0, 360)
        rr, cc = ellipse(y, x, b, a, shape=shape, rotation=np.deg2rad(-angle))
        img[rr, cc] = 255
    img = img * rng.uniform(*c.alpha) + rng.uniform(*c.beta)
    return np.clip(img, 0, 255).astype(np.uint8)


def _time(fn, jobs, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, pts in enumerate(jobs):
            fn(i, pts)
        best = min(best, time.perf_counter() - t0)
    return len(jobs) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=800)
    args = ap.parse_args()
    shape = (args.size, args.size)
    rng = np.random.default_rng(0)
    jobs = [rng.uniform(0, args.size, (int(rng.integers(100, 301)), 2)) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cases = {
            "in memory": (lambda i, p: render_synhc(p, shape, np.random.default_rng(i)),
                          lambda i, p: render_baseline(p, shape, np.random.default_rng(i))),
            "with PNG writing": (
                lambda i, p: write_image(out / f"v{i}.png", render_synhc(p, shape, np.random.default_rng(i))),
                lambda i, p: Image.fromarray(render_baseline(p, shape, np.random.default_rng(i))).save(out / f"b{i}.png")),
        }
        print(f"Syn-HC, {args.size}x{args.size}, 100-300 cells, {args.images} images, best of {args.repeats}")
        for name, (ours, base) in cases.items():
            ours_ips, base_ips = _time(ours, jobs, args.repeats), _time(base, jobs, args.repeats)
            print(f"{name:>18}: instlib {ours_ips:7.1f} img/s | baseline {base_ips:7.1f} img/s | "
                  f"ratio {ours_ips / base_ips:.2f}x")


if __name__ == "__main__":
    main()
