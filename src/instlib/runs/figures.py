"""Figures the notebooks share: image galleries, loss curves, metric bars, scatter plots, comparisons.

Each function returns a matplotlib ``Figure``; :func:`save` writes it under ``RUN/figures``.
Counts shown on images always come from the points files, never from the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path):
    """Save ``fig`` as PNG at ``path`` and return it (so a cell can end with ``save(...)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return fig


def cells(n: int) -> str:
    """``"1 cell"``, ``"7 cells"``."""
    return f"{n} cell" if n == 1 else f"{n} cells"


def find_image(folder: str | Path, name: str) -> Path:
    from instlib.data.images import IMAGE_SUFFIXES

    for suffix in IMAGE_SUFFIXES:
        p = Path(folder) / "images" / f"{name}{suffix}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"{folder}: no image named {name}")


def load(folder: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W, C)`` in [0, 1] and its points, by name."""
    from instlib.data.images import read_image
    from instlib.data.points import read_points

    img = read_image(find_image(folder, name))
    return img, read_points(Path(folder) / "points" / f"{name}.csv")


def _show(ax, img: np.ndarray, points: np.ndarray | None = None, stretch: bool = False) -> None:
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if stretch:
        hi = float(np.percentile(img, 99.5)) or 1.0
        img = np.clip(img / hi, 0, 1)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    if points is not None and len(points):
        ax.scatter(points[:, 0] - 0.5, points[:, 1] - 0.5, s=6, c="#ff3b30", marker="+", linewidths=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def image_grid(rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray | None, str]]], row_labels: Sequence[str],
               *, size: float = 2.0, stretch: bool = False, title: str | None = None):
    """A grid of images: ``rows[r][c] = (image, points or None, caption)``."""
    plt = _plt()
    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows + (0.4 if title else 0)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(row):
                ax.axis("off")
                continue
            img, pts, caption = row[c]
            _show(ax, img, pts, stretch)
            ax.set_title(caption, fontsize=8)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gallery(folders: Mapping[str, str | Path], names: Sequence[str], *, points: bool = False,
            size: float = 2.0, stretch: bool = False, title: str | None = None, columns: str = "names"):
    """Images of several folders side by side (label -> folder), with their counts.

    ``columns="names"``: one row per folder, one column per image name. ``columns="folders"``: one
    column per folder (labelled on top), one row per image name (better for many variants).
    """
    if columns == "folders":
        rows, labels = [], []
        for name in names:
            row = []
            for i, (label, folder) in enumerate(folders.items()):
                img, pts = load(folder, name)
                row.append((img, pts if points else None, label if not rows else ""))
            rows.append(row)
            labels.append(f"{name}\n{cells(len(pts))}")
        return image_grid(rows, labels, size=size, stretch=stretch, title=title)
    rows = []
    for folder in folders.values():
        row = []
        for name in names:
            img, pts = load(folder, name)
            row.append((img, pts if points else None, f"{name}\n{cells(len(pts))}"))
        rows.append(row)
    return image_grid(rows, list(folders), size=size, stretch=stretch, title=title)


def series(folder: str | Path, groups: Mapping[str, Sequence[str]], *, size: float = 1.8, title: str | None = None):
    """One row per group (label -> image names in order), e.g. the gradual-count series."""
    rows = []
    for names in groups.values():
        row = []
        for name in names:
            img, pts = load(folder, name)
            row.append((img, None, cells(len(pts))))
        rows.append(row)
    return image_grid(rows, list(groups), size=size, title=title)


def loss_curves(curves: Mapping[str, pd.DataFrame], *, window: int = 10, title: str | None = None):
    """Loss against step for each label (raw, faint; moving average, solid)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (label, df) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(df["step"], df["loss"], color=color, alpha=0.25, lw=0.8)
        w = max(1, min(window, len(df) // 3 or 1))
        ax.plot(df["step"], df["loss"].rolling(w, min_periods=1).mean(), color=color, lw=1.8, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("noise-prediction MSE")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_bars(summary: pd.DataFrame, *, x: str = "source", hue: str | None = None,
                metrics: Sequence[str] = ("mae", "rmse", "acp"), title: str | None = None):
    """Bars of ``<metric>_mean`` with ``<metric>_ci`` error bars (95% interval over seeds), one panel per metric."""
    import seaborn as sns

    plt = _plt()
    labels = {"mae": "MAE (lower is better)", "rmse": "RMSE (lower is better)", "acp": "ACP % (higher is better)"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    order = list(dict.fromkeys(summary[x]))
    hue_order = list(dict.fromkeys(summary[hue])) if hue else None
    for ax, m in zip(axes[0], metrics):
        sns.barplot(data=summary, x=x, y=f"{m}_mean", hue=hue, order=order, hue_order=hue_order, ax=ax,
                    palette="deep" if hue else None, color=None if hue else "C0", errorbar=None)
        # error bars from the stored std (one bar per x, hue)
        for container, h in zip(ax.containers, hue_order or [None]):
            sub = summary if h is None else summary[summary[hue] == h]
            sub = sub.set_index(x).reindex(order)
            xs = [bar.get_x() + bar.get_width() / 2 for bar in container]
            ax.errorbar(xs, sub[f"{m}_mean"].to_numpy(), yerr=sub[f"{m}_ci"].fillna(0).to_numpy(), fmt="none",
                        ecolor="black", elinewidth=1, capsize=3)
        ax.set_xlabel("")
        ax.set_ylabel(labels.get(m, m))
        ax.tick_params(axis="x", rotation=20)
        if hue and ax.get_legend():
            ax.get_legend().remove()
    if hue:
        handles, labels_ = axes[0][-1].get_legend_handles_labels()
        axes[0][-1].legend(handles, labels_, title=hue, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def comparison_plot(table: pd.DataFrame, *, title: str | None = None):
    """Paired differences in MAE (``a`` minus ``b``) with their intervals, against 0; claimed ones in colour.

    ``table`` is :func:`instlib.count.compare.compare`'s: one line per pair, ``delta_mae`` with
    ``ci_low``..``ci_high``; left of 0, ``a`` counted the same test images better.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.36 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    claimed = table["claimed"].to_numpy(dtype=bool)
    for mask, colour, label in ((claimed, "C3", "claimed (interval excludes 0, Holm p < 0.05)"),
                                (~claimed, "0.45", "no difference detected")):
        if mask.any():
            t = table[mask]
            ax.errorbar(t["delta_mae"], y[mask], xerr=[t["delta_mae"] - t["ci_low"], t["ci_high"] - t["delta_mae"]],
                        fmt="o", color=colour, ecolor=colour, capsize=3, label=label)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(y, [f"{a}  vs  {b}" for a, b in zip(table["a"], table["b"])], fontsize=8)
    ax.set_xlabel("difference in MAE per test image, cells (left: the first counts better)")
    ax.legend(fontsize=8, loc="lower right" if len(table) > 2 else "best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def pred_scatter(preds: pd.DataFrame, *, by: str = "source", title: str | None = None):
    """Predicted against true count per source, with the identity line."""
    plt = _plt()
    groups = list(dict.fromkeys(preds[by])) if by in preds else [None]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.0 * len(groups), 3.2), squeeze=False, sharex=True,
                             sharey=True)
    hi = float(max(preds["true"].max(), preds["pred"].max(), 1)) * 1.05
    for ax, g in zip(axes[0], groups):
        sub = preds if g is None else preds[preds[by] == g]
        ax.plot([0, hi], [0, hi], color="0.5", lw=1, ls="--")
        ax.scatter(sub["true"], sub["pred"], s=14, alpha=0.75)
        mae = float(np.mean(np.abs(sub["pred"] - sub["true"]))) if len(sub) else float("nan")
        ax.set_title(f"{g}  (MAE {mae:.1f})" if g is not None else f"MAE {mae:.1f}", fontsize=9)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("true count")
    axes[0][0].set_ylabel("predicted count")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fidelity_plot(df: pd.DataFrame, *, x: str = "strength", title: str | None = None):
    """Label fidelity against transfer strength: recall of labelled cells and spurious blobs per image.

    ``df`` holds transfer-manifest rows (``fidelity_recall``, ``fidelity_spurious`` and, when present,
    ``content_recall``, the same measure on the unstyled content) with an ``x`` column.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
    g = df.groupby(x)
    rec, spu = g["fidelity_recall"], g["fidelity_spurious"]
    ax1.errorbar(rec.mean().index, rec.mean(), yerr=rec.std().fillna(0), marker="o", capsize=3, label="styled")
    if "content_recall" in df:
        ax1.axhline(float(df["content_recall"].mean()), color="0.4", ls="--", lw=1, label="Syn-HC content")
    ax1.set_xlabel("transfer strength")
    ax1.set_ylabel("recall of labelled cells")
    ax1.set_ylim(-0.05, 1.05)
    ax1.legend(fontsize=8)
    ax2.errorbar(spu.mean().index, spu.mean(), yerr=spu.std().fillna(0), marker="s", capsize=3, color="C3")
    if "content_spurious" in df:
        ax2.axhline(float(df["content_spurious"].mean()), color="0.4", ls="--", lw=1)
    ax2.set_xlabel("transfer strength")
    ax2.set_ylabel("unlabelled blobs per image")
    ax2.set_ylim(bottom=0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def realism_plot(sweep: pd.DataFrame, baselines: Mapping[str, tuple[float, float]], *, x: str = "strength",
                 title: str | None = None):
    """Real-vs-synthetic classifier accuracy against transfer strength (0.5 = indistinguishable).

    ``sweep`` has columns ``x``, ``accuracy``, ``std``; ``baselines`` maps a label (e.g. Syn-HC) to its
    ``(accuracy, std)``, drawn as a dashed line with its band.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.errorbar(sweep[x], sweep["accuracy"], yerr=sweep["std"], marker="o", capsize=3, label="InST")
    for i, (label, (acc, std)) in enumerate(baselines.items()):
        ax.axhline(acc, color=f"C{i + 1}", ls="--", lw=1, label=label)
        ax.axhspan(acc - std, acc + std, color=f"C{i + 1}", alpha=0.12, lw=0)
    ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xlabel("transfer strength")
    ax.set_ylabel("real-vs-synthetic accuracy")
    ax.set_ylim(0.4, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def density_figure(folder: str | Path, maps_dir: str | Path, names: Sequence[str], *, size: float = 2.2,
                   title: str | None = None):
    """One row per image: the image, its true points, and the predicted density map with its sum.

    ``maps_dir`` holds the ``<name>.tiff`` maps that ``count predict --maps`` (``predict(maps_dir=...)``) wrote.
    """
    import tifffile

    plt = _plt()
    fig, axes = plt.subplots(len(names), 3, figsize=(3 * size, size * len(names) + (0.4 if title else 0)),
                             squeeze=False)
    for r, name in enumerate(names):
        img, pts = load(folder, name)
        density = tifffile.imread(Path(maps_dir) / f"{name}.tiff")
        _show(axes[r, 0], img, stretch=True)
        axes[r, 0].set_title(name, fontsize=8)
        _show(axes[r, 1], img, pts, stretch=True)
        axes[r, 1].set_title(f"true: {cells(len(pts))}", fontsize=8)
        axes[r, 2].imshow(density, cmap="magma", vmin=0)
        axes[r, 2].set_xticks([])
        axes[r, 2].set_yticks([])
        axes[r, 2].grid(False)
        axes[r, 2].set_title(f"predicted density: sum {density.sum(dtype=np.float64):.1f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
