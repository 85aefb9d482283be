"""The density counter's defaults, decided by measurement: one setting changed at a time.

Makes ``--replicates`` simulated data sets of the ``hard`` preset (brightness varying several-fold
inside an image, saturated clumps, debris, uneven background, few photons), each from its own seed,
with several stains (``--stains``: nuclear and marker stains, so fields with zero or one positive cell
occur). On each it trains the density counter from scratch (``count train --head density
--no-pretrained``) with the defaults and with each variant, training seed ``42 + replicate``, and fits
the classical counter. Every run predicts its replicate's test images; a variant is compared with the
defaults per test image, pooled over the replicates (:func:`instlib.count.compare.comparison_table`:
paired BCa interval, sign-flip permutation test, Holm over the variants, smallest detectable
difference). A new data set per replicate varies what the simulator draws as well as the training
seed, so nothing is tuned to one draw of either.

Writes ``runs/<variant>/<replicate>/`` (``count train`` run folders: a rerun skips finished runs and
resumes killed ones), ``results.csv`` (MAE per variant and replicate, with wall time), ``by_stain.csv``,
``comparisons.csv`` and ``comparisons.png``.

Run:  python benchmarks/count_defaults.py --out /tmp/count-defaults --jobs 2   (about 8 min a run at one thread)
      python benchmarks/count_defaults.py --out /tmp/cd --size 96x128 --train 4 --test 4 --replicates 2 \\
          --variants default,unet16 --set epochs=2 --set crop_size=48              (seconds: a smoke run)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from instlib.config.count import AUTO_SIGMA_FRACTION, TrainConfig
from instlib.count.bank import cell_sigma, load_bank
from instlib.count.classical import classical_run
from instlib.count.compare import comparison_table
from instlib.data.folder import list_samples
from instlib.data.simulate import simulate

#: One change each against the defaults (``default``). ``sigma`` factors scale the default (auto) target width.
VARIANTS: dict[str, dict] = {
    "default": {},
    "unet16": {"model": "unet16"},
    "unet32": {"model": "unet32"},
    "stride 4": {"out_stride": 4},
    "sigma x0.5": {"sigma": 0.5},
    "sigma x2": {"sigma": 2.0},
    "count scales 1+2+4": {"count_scales": (1, 2, 4)},
    "count weight 0.1": {"count_weight": 0.1},
    "crop 128": {"crop_size": 128},
    "crop 256": {"crop_size": 256},
    "point crops 0.5": {"point_crops": 0.5},
    "empty crops all kept": {"zero_keep": 1.0},
    "percentile 99.9": {"intensity_percentile": 99.9},
    "intensity augment": {"intensity_augment": True},
    "no colour jitter": {"jitter": False},
    "cosine": {"schedule": "cosine"},
    "ema 0.99": {"ema": 0.99},
    "keep best": {"keep": "best", "val_every": 1},
}


def make_replicate(root: Path, r: int, args) -> tuple[Path, Path]:
    """The train and test folders of replicate ``r`` (seeds ``1000 r`` and ``1000 r + 1``)."""
    size = tuple(int(v) for v in args.size.split("x"))
    cells = tuple(int(v) for v in args.cells.split(","))
    stains = tuple(args.stains.split(",")) if args.stains else ()
    folders = []
    for part, n, seed in (("train", args.train, 1000 * r), ("test", args.test, 1000 * r + 1)):
        out = root / "data" / f"r{r}" / part
        if not (out / "manifest.csv").is_file():
            simulate(out, n=n, size=size, cells=cells, seed=seed, config="hard", stains=stains, progress=False)
        folders.append(out)
    return folders[0], folders[1]


def _config(name: str, r: int, base: dict, train: Path) -> TrainConfig:
    changes = dict(VARIANTS[name])
    config = TrainConfig(**{"head": "density", "pretrained": False, **base, "seed": 42 + r})
    if "sigma" in changes:  # a factor of the default width (sigma="auto")
        blob = cell_sigma(load_bank(list_samples(train), progress=False))
        changes["sigma"] = round(changes["sigma"] * AUTO_SIGMA_FRACTION * blob, 2)
    return config.updated(**changes)


def train_one(job: tuple[str, int, dict, str, str, str]) -> dict:
    """Train variant ``name`` on replicate ``r``; the run's MAE and wall time."""
    import torch

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    from instlib.count.train import train_run

    name, r, base, train, test, out = job
    metrics = train_run([train], test, out, _config(name, r, base, Path(train)), progress=False)
    return {"variant": name, "replicate": r, "mae": metrics["mae"], "wall_s": metrics["wall_s"]}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _tagged(df: pd.DataFrame, r: int, variant: str) -> pd.DataFrame:
    """Predictions of replicate ``r`` named apart from the other replicates' (their images share names)."""
    return df.assign(name=[f"r{r}/{n}" for n in df["name"]], seed=r, variant=variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--train", type=int, default=10, help="training images per replicate")
    parser.add_argument("--test", type=int, default=20, help="test images per replicate")
    parser.add_argument("--size", default="512x640", help="HxW of every image")
    parser.add_argument("--cells", default="5,200", help="LO,HI cells per field")
    parser.add_argument("--stains", default="DAPI,Cy3,GFAP", help="stains, in turn ('' for nuclei only)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig setting for every run (JSON value), e.g. epochs=2")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    args = parser.parse_args()
    names = args.variants.split(",")
    if names[0] != "default" or any(n not in VARIANTS for n in names):
        parser.error(f"--variants: start with 'default', then names of: {', '.join(VARIANTS)}")
    base = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}

    data = [make_replicate(args.out, r, args) for r in range(args.replicates)]
    jobs = [(n, r, base, str(tr), str(te), str(args.out / "runs" / n / f"r{r}"))
            for r, (tr, te) in enumerate(data) for n in names]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pd.DataFrame(list(pool.map(train_one, jobs)))

    preds = [_tagged(pd.read_csv(args.out / "runs" / n / f"r{r}" / "predictions.csv"), r, n)
             for n in names for r in range(args.replicates)]
    for r, (tr, te) in enumerate(data):
        classical, _ = classical_run([tr], te, progress=False)
        if args.stains:
            classical["stain"] = pd.read_csv(te / "manifest.csv").set_index("name").loc[classical["name"], "stain"].to_numpy()
        preds.append(_tagged(classical, r, "classical"))
        results.loc[len(results)] = {"variant": "classical", "replicate": r,
                                     "mae": float((classical["pred"] - classical["true"]).abs().mean()), "wall_s": 0}
    preds = pd.concat(preds, ignore_index=True)
    errors = preds.assign(error=(preds["pred"] - preds["true"]).abs()).pivot_table(
        index=["name", "seed"], columns="variant", values="error", sort=False)
    rows = [n for n in [*names, "classical"] if n != "default"]
    table = comparison_table(errors, [(n, "default") for n in rows]).drop(columns="b").rename(columns={"a": "variant"})
    table.insert(1, "mae", [errors[n].mean() for n in rows])
    table["wall_s"] = [results.loc[results["variant"] == n, "wall_s"].mean() for n in rows]

    results.to_csv(args.out / "results.csv", index=False)
    table.to_csv(args.out / "comparisons.csv", index=False)
    if "stain" in preds:
        by_stain = (preds.assign(error=(preds["pred"] - preds["true"]).abs())
                    .pivot_table(index="variant", columns="stain", values="error", sort=False))
        by_stain.to_csv(args.out / "by_stain.csv")
    plot(table, errors["default"].mean(), args.out / "comparisons.png")
    pd.set_option("display.width", 200)
    print(f"default MAE {errors['default'].mean():.2f} over {errors.index.get_level_values('name').nunique()} "
          f"test images, {args.replicates} replicates")
    print(table[["variant", "mae", "delta_mae", "ci_low", "ci_high", "p_holm", "mde", "claimed", "wall_s"]]
          .round(3).to_string(index=False))


def plot(table: pd.DataFrame, default_mae: float, path: Path) -> None:
    """Each variant's paired difference in MAE from the defaults, with its 95% interval."""
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(t) + 1.2))
    y = np.arange(len(t))
    for yi, row in zip(y, t.itertuples()):  # green: claimed better than the defaults, red: claimed worse
        color = ("tab:green" if row.delta_mae < 0 else "tab:red") if row.claimed else "0.4"
        ax.errorbar(row.delta_mae, yi, xerr=[[row.delta_mae - row.ci_low], [row.ci_high - row.delta_mae]], fmt="o",
                    color=color, ms=4, capsize=2)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, t["variant"])
    ax.set_xlabel(f"MAE minus the defaults' ({default_mae:.2f}), cells per test image")
    ax.set_xscale("symlog", linthresh=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
