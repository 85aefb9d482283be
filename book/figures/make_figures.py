"""Regenerate the book's pipeline diagram (``book/figures/pipeline.png``).

    python book/figures/make_figures.py

The executed notebooks show the figures of an actual run; this diagram is the only drawn one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent


def _box(ax, xy, w, h, text, color):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.03", fc=color, ec="0.25", lw=1))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=8.5, wrap=True)


def _arrow(ax, a, b, text=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.2"))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.03, text, ha="center", va="bottom", fontsize=7.5,
                color="0.25")


def pipeline(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.set_xlim(-0.02, 1.03)
    ax.set_ylim(0, 1.0)
    ax.axis("off")
    data, style, count = "#dbe9f6", "#fde2c8", "#d9f0d3"
    w, h = 0.15, 0.17
    # top row: data
    _box(ax, (0.01, 0.72), w, h, "real image\n+ cell points (X,Y)", data)
    _box(ax, (0.22, 0.72), w, h, "Syn-HC\nellipses at the real\npoints on noise", data)
    _arrow(ax, (0.16, 0.805), (0.22, 0.805))
    # middle: style token
    _box(ax, (0.01, 0.40), w, h, "CLIP ViT-L/14\nimage encoder", style)
    _box(ax, (0.22, 0.40), w, h, "attention block\n(trained)\n-> token *", style)
    _arrow(ax, (0.085, 0.72), (0.085, 0.57))
    _arrow(ax, (0.16, 0.485), (0.22, 0.485))
    # InST transfer
    _box(ax, (0.43, 0.58), 0.25, 0.31,
         "InST transfer (frozen SD v1.4)\n1. VAE-encode content and style\n2. latent AdaIN\n"
         "3. stochastic inversion\n4. DDIM, guidance with token *\n5. VAE-decode", style)
    _arrow(ax, (0.37, 0.805), (0.43, 0.805))
    _arrow(ax, (0.37, 0.485), (0.43, 0.62))
    _box(ax, (0.74, 0.72), w, h, "InST image\n(labels = Syn-HC's)", data)
    _arrow(ax, (0.68, 0.805), (0.74, 0.805))
    # counting
    _box(ax, (0.43, 0.08), 0.25, 0.22, "pre-train EfficientNet-B0 on a source:\nreal, Syn-HC, Cell200-s or InST\n"
         "(optionally CutMix / DACS)", count)
    _box(ax, (0.74, 0.08), w, 0.22, "fine-tune on real,\ntest on held-out real\n(5-fold CV)", count)
    _box(ax, (0.93, 0.08), 0.08, 0.22, "MAE\nRMSE\nACP", count)
    _arrow(ax, (0.815, 0.72), (0.60, 0.30))
    _arrow(ax, (0.68, 0.19), (0.74, 0.19))
    _arrow(ax, (0.89, 0.19), (0.93, 0.19))
    _arrow(ax, (0.085, 0.40), (0.43, 0.15), "real images (fine-tuning, testing)")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    pipeline(HERE / "pipeline.png")
    print("wrote", HERE / "pipeline.png")
