"""The summary of a run beside the paper's numbers, and what the comparison can and cannot show.

The paper's numbers live in ``paper_results.csv`` beside this module (from the published abstract;
rows marked ``exact = false`` are derived or unpublished, and say so in ``note``).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from instlib.data.tables import read_table
from instlib.runs.profiles import PRIOR, Profile

METRICS = ("mae", "rmse", "acp")
#: Source names used for run folders (no '-') and the names the paper and the figures use.
SOURCE_LABELS = {"real": "real", "synhc": "Syn-HC", "cell200": "Cell200-s", "inst": "InST",
                 "classical": "classical (no training)"}
SOURCE_ORDER = list(SOURCE_LABELS.values())
# The tables instlib.count.cv writes into a cross-validation folder: one row per run, and per source and mix.
RESULTS_FILE, SUMMARY_FILE = "results.csv", "summary.csv"
# Their numeric columns (every other column, e.g. source, mix, model, name, is text); summary.csv
# has ``<metric>_mean`` / ``<metric>_std`` for every metric of results.csv.
RESULTS_NUMBERS = ("fold", "seed", "mae", "rmse", "acp", "mae_center", "rmse_center", "acp_center", "n_test", "epochs",
                   "finetune_epochs", "sigma", "wall_s", "excluded", "pretrain_epoch", "final_epoch")
PREDICTIONS_NUMBERS = ("true", "pred", "true_center", "pred_center")


def _summary_number(column: str) -> bool:
    return column.endswith(("_mean", "_std")) or column == "runs"


def label_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Replace run-folder source names (``synhc``) by display names (``Syn-HC``) and sort by source."""
    out = df.assign(source=df["source"].map(lambda s: SOURCE_LABELS.get(s, s)))
    rank = {s: i for i, s in enumerate(SOURCE_ORDER)}
    mix_rank = {"none": 0, "cutmix": 1, "dacs": 2}
    keys = ["source"] + (["mix"] if "mix" in out else [])
    return out.sort_values(keys, key=lambda c: c.map(rank if c.name == "source" else mix_rank).fillna(99),
                           kind="stable").reset_index(drop=True)


def _results(cv_dir) -> pd.DataFrame:
    """``results.csv`` of a cross-validation folder: one row per run, with run-folder source names."""
    return read_table(Path(cv_dir) / RESULTS_FILE, numbers=RESULTS_NUMBERS)


def load_summary(cv_dir, *, mixes=None, sources=None) -> pd.DataFrame:
    """``summary.csv`` of a cross-validation folder with display names, optionally filtered."""
    df = read_table(Path(cv_dir) / SUMMARY_FILE, numbers=_summary_number)
    if mixes is not None:
        df = df[df["mix"].isin(list(mixes))]
    if sources is not None:
        df = df[df["source"].isin(list(sources))]
    return label_sources(df)
LABELS = {"mae": "MAE", "rmse": "RMSE", "acp": "ACP (%)"}


def paper_results() -> pd.DataFrame:
    """The paper's published numbers (source, mix, metric, value, exact, note)."""
    with resources.as_file(resources.files("instlib.runs").joinpath("paper_results.csv")) as path:
        return read_table(path, numbers=("value",), flags=("exact",))


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"25.95 ± 1.20"`` (``"25.95"`` without a spread, ``"-"`` when missing)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metrics_table(summary: pd.DataFrame, *, by: tuple[str, ...] = ("source",)) -> pd.DataFrame:
    """``<metric>_mean`` / ``<metric>_std`` columns as ``mean ± std`` strings, one row per ``by``."""
    rows = []
    for _, r in summary.iterrows():
        row = {k: r[k] for k in by}
        for m in METRICS:
            if f"{m}_mean" in r:
                row[LABELS[m]] = mean_std(r[f"{m}_mean"], r.get(f"{m}_std"))
        if "excluded_mean" in r and not pd.isna(r["excluded_mean"]):
            row["excluded / run"] = f"{r['excluded_mean']:.1f}"
        if "runs" in r:
            row["runs"] = int(r["runs"])
        rows.append(row)
    return pd.DataFrame(rows).set_index(list(by))


def beside_paper(summary: pd.DataFrame, mix: str = "none") -> pd.DataFrame:
    """This run's MAE/RMSE/ACP per source beside the paper's MAE (``mix`` rows of both)."""
    ours = summary[summary["mix"] == mix] if "mix" in summary else summary
    paper = paper_results()
    paper = paper[(paper["mix"] == mix) & (paper["metric"] == "mae")].set_index("source")
    sources = list(dict.fromkeys([*ours["source"], *paper.index]))
    rows = []
    for s in sources:
        r = ours[ours["source"] == s]
        row = {"source": s}
        for m in METRICS:
            row[f"this run: {LABELS[m]}"] = (mean_std(r[f"{m}_mean"].iloc[0], r[f"{m}_std"].iloc[0])
                                             if len(r) and f"{m}_mean" in r else "not run")
        if s in paper.index and not math.isnan(paper.loc[s, "value"]):
            v = paper.loc[s, "value"]
            row["paper: MAE"] = f"{v:.2f}" if paper.loc[s, "exact"] else f"~{v:.0f} (derived)"
        else:
            row["paper: MAE"] = "-"
        rows.append(row)
    return pd.DataFrame(rows).set_index("source")


def _get(summary: pd.DataFrame, source: str, metric: str = "mae", mix: str = "none") -> tuple[float, float] | None:
    r = summary[(summary["source"] == source) & ((summary["mix"] == mix) if "mix" in summary else True)]
    if not len(r):
        return None
    return float(r[f"{metric}_mean"].iloc[0]), float(r[f"{metric}_std"].fillna(0).iloc[0])


def paired(cv_dir, better: str, worse: str, mix: str = "none") -> str:
    """`` Run by run ...``: how often ``better`` had a lower MAE than ``worse`` on the same fold and seed.

    Folds differ in difficulty for every counter alike, so the spread over folds of each row overstates
    how uncertain their difference is; the same test images side by side do not. Empty when there are
    no such pairs (or no ``cv_dir``).
    """
    if cv_dir is None or not (Path(cv_dir) / RESULTS_FILE).is_file():
        return ""
    df = label_sources(_results(cv_dir))
    mae = df[df["mix"] == mix].pivot_table(index=["fold", "seed"], columns="source", values="mae")
    if better not in mae or worse not in mae or not len(gain := (mae[worse] - mae[better]).dropna()):
        return ""
    margin = (f"by {gain.min():.2f} to {gain.max():.2f} cells" if (gain > 0).all() else
              f"its MAE lower by {gain.min():+.2f} to {gain.max():+.2f} cells")
    return (f" Run by run, on the same test images, {better} had the lower MAE in {int((gain > 0).sum())} of "
            f"{len(gain)} ({margin}).")


def statement(summary: pd.DataFrame, profile: Profile, *, cell200: bool | None = None, cv_dir=None
              ) -> tuple[list[str], list[str]]:
    """Two lists of plain sentences: what this run's numbers show, and what they do not.

    With ``cv_dir`` (the cross-validation folder the summary comes from) it also weighs the recipe.
    """
    shows, not_shows = [], []
    inst, syn, real = (_get(summary, s) for s in ("InST", "Syn-HC", "real"))
    if inst and syn:
        change = 100 * (syn[0] - inst[0]) / syn[0] if syn[0] else 0.0
        relative = (f"{abs(change):.0f}% {'lower' if change > 0 else 'higher'}" if abs(change) >= 0.5
                    else "about the same")
        separated = abs(inst[0] - syn[0]) > inst[1] + syn[1]
        shows.append(f"Pre-training on InST images gave an MAE of {mean_std(*inst)} against {mean_std(*syn)} for "
                     f"Syn-HC: {relative} (the paper reports up to 37% lower)."
                     + ("" if separated else " The difference is within the spread over folds, so this run "
                        "does not separate the two.")
                     + (paired(cv_dir, "InST", "Syn-HC") if change > 0 else paired(cv_dir, "Syn-HC", "InST")))
    if inst and real:
        better = inst[0] < real[0]
        separated = abs(inst[0] - real[0]) > inst[1] + real[1]
        shows.append(f"Against real data only ({mean_std(*real)}), InST pre-training was "
                     f"{'better' if better else 'not better'} in this run (the paper: 25.95 against 27.74)."
                     + ("" if separated else " This difference, too, is within the spread over folds."))
    classical = _get(summary, SOURCE_LABELS["classical"])
    deep = {s: v for s in ("real", "Syn-HC", "Cell200-s", "InST") if (v := _get(summary, s))}
    if classical and deep:
        best = min(deep, key=lambda s: deep[s][0])
        beats = deep[best][0] < classical[0]
        separated = abs(deep[best][0] - classical[0]) > deep[best][1] + classical[1]
        shows.append(f"The classical counter (Gaussian smoothing and local maxima, three parameters fitted on each "
                     f"fold's training images) scored {mean_std(*classical)}; the best deep model ({best}) "
                     f"{'beat' if beats else 'did not beat'} it with {mean_std(*deep[best])}"
                     + ("." if separated else ", within the spread over folds.")
                     + (paired(cv_dir, best, SOURCE_LABELS["classical"]) if beats else ""))
    if not shows:
        shows.append("This run has no counting results to compare.")
    if profile.random_diffusion:
        not_shows.append(f"The diffusion model ({profile.diffusion_model}) has random weights, so the InST images "
                         "are not style transfers: any difference between InST and Syn-HC here says nothing "
                         "about the method.")
    if profile.simulated_data:
        not_shows.append("The real domain is the offline simulator, not IDCIA: the numbers are not comparable "
                         "with the paper's, whose images, counts (up to hundreds of cells) and sizes differ.")
    small = []
    if profile.epochs < 20 or profile.finetune_epochs < 20:
        small.append(f"{profile.epochs} pre-training and {profile.finetune_epochs} fine-tuning epochs")
    if not profile.count_pretrained:
        small.append(f"{profile.count_model} without ImageNet weights")
    if profile.folds < 5:
        small.append(f"{profile.folds}-fold instead of 5-fold cross-validation")
    if small:
        not_shows.append("The counting models are far from converged settings (" + "; ".join(small) + "), so "
                         "the absolute errors mostly measure the budget, not the data source.")
    if real and profile.finetune_epochs > 0:
        not_shows.append(f"Real-only runs train for {profile.epochs} epochs; runs with a pre-training source "
                         f"train for {profile.epochs} + {profile.finetune_epochs}, so part of any gain over "
                         "real-only can be the longer training.")
    if len(profile.seeds) < 2:
        not_shows.append("One seed: the ± is the spread over folds only, not over training randomness.")
    if cell200 is False:
        not_shows.append("Cell200-s was not available to this run, so it is missing from the comparison "
                         "(pass a folder with --set cell200=PATH).")
    recipe = protocol(cv_dir)["recipe"] if cv_dir is not None else None
    if recipe is not None and recipe != "authors":
        not_shows.append(f"The counting models were trained with the '{recipe}' recipe, not the authors' (dropout "
                         "and stochastic depth 0.2, no weight decay, StepLR(10, 0.1), IDCIA normalisation, default "
                         "head init): part of any difference from the paper's numbers can be the recipe.")
    if profile.name == "paper" and not not_shows:
        not_shows.append("The paper does not publish every training detail (epochs, schedule); differences of "
                         "a few MAE points from its numbers are within what such details can change.")
    return shows, not_shows


def finite_metrics(summary: pd.DataFrame) -> bool:
    """True when every mean metric of the summary is a finite number."""
    cols = [f"{m}_mean" for m in METRICS if f"{m}_mean" in summary]
    return bool(cols) and bool(np.isfinite(summary[cols].to_numpy(dtype=float)).all())


def cv_predictions(cv_dir, mix: str | None = "none"):
    """Every test prediction of a cross-validation folder: source, mix, fold, seed, name, true, pred."""
    frames = []
    for result in sorted(Path(cv_dir).glob("runs/*/result.json")):
        meta = json.loads(result.read_text())
        if mix is not None and meta.get("mix") != mix:
            continue
        pred = result.with_name("predictions.csv")
        if pred.is_file():
            df = read_table(pred, numbers=PREDICTIONS_NUMBERS)
            frames.append(df.assign(source=meta["source"], mix=meta["mix"], fold=meta["fold"], seed=meta["seed"]))
    if not frames:
        return pd.DataFrame(columns=["source", "mix", "fold", "seed", "name", "true", "pred"])
    return label_sources(pd.concat(frames, ignore_index=True))


# ---------------------------------------------------------------- protocol: recipe, split, exclusions

SPLIT_WORDS = {"stratified": "{folds}-fold cross-validation stratified by count (folds drawn with seed 42)",
               "official": "the data set's official split (train / val / test lists), one run per source"}


def protocol_table(cv_dir) -> pd.DataFrame:
    """Per run: source, mix, fold, seed, synthetic images excluded, and the epochs selection kept.

    ``excluded``: images of the pre-training source drawn from a test image of the fold (manifest
    ``origin``), left out of that run; ``pretrain_epoch`` / ``final_epoch``: the epoch kept by
    pre-training (empty for real-only runs) and by the last stage, out of ``epochs`` /
    ``finetune_epochs``.
    """
    df = _results(cv_dir)
    cols = ["source", "mix", "fold", "seed", "excluded", "pretrain_epoch", "epochs", "final_epoch", "finetune_epochs"]
    df = df[[c for c in cols if c in df]]
    # Epochs are whole numbers; real-only runs have no pre-training epoch (an empty cell, not NaN).
    epochs = [c for c in ("pretrain_epoch", "epochs", "final_epoch", "finetune_epochs") if c in df]
    return label_sources(df.astype({c: "Int64" for c in epochs}))


def protocol(cv_dir) -> dict:
    """Recipe, split, number of folds, counting head, epoch kept, and the synthetic images excluded (once per source and fold)."""
    settings = json.loads((Path(cv_dir) / "cv.json").read_text())
    table = protocol_table(cv_dir)
    excluded = table.groupby(["source", "fold"])["excluded"].max().sum() if "excluded" in table else 0
    return {"recipe": settings["config"].get("recipe", "instlib"),
            "split": settings["config"].get("split", "stratified"), "folds": settings["folds"],
            "head": settings["config"].get("head") or "regression",
            "density": bool(settings["config"].get("density")), "excluded": int(excluded),
            "keep": settings["config"].get("keep") or "best",
            "sigma": settings["config"].get("sigma"), "sigmas": _target_sigmas(cv_dir)}


def _target_sigmas(cv_dir) -> list[float]:
    """The distinct widths (pixels) of the Gaussian targets that the density-head runs trained on."""
    df = _results(cv_dir)
    return sorted(float(s) for s in df["sigma"].dropna().unique()) if "sigma" in df else []


def _density_targets(p: dict) -> str:
    """``Gaussian targets of σ 5.9-6.1 px, ...``: the targets of a protocol's density-head runs, in words."""
    if not p["sigmas"]:
        return "Gaussian targets"
    lo, hi = p["sigmas"][0], p["sigmas"][-1]
    how = ", the cells' blob scale measured on each run's real training images" if p["sigma"] == "auto" else ""
    return f"Gaussian targets of σ {lo:g}" + (f"-{hi:g}" if hi > lo else "") + f" px{how}"


def exposure(profile: Profile) -> list[str]:
    """Plain sentences saying which real images, and which of their labels, each source was allowed to see.

    No source gets the points or counts of its own fold's test images (:func:`protocol_statement` counts the
    synthetic images left out for that); what remains is said here: style tokens trained under
    cross-validation, and a diffusion prior trained in the run, saw images that are test images of some fold.
    """
    which = (f" of stain {profile.stain}" if profile.stain else
             f" named '{profile.style_names}'" if profile.style_names else "")
    tokens = (f"the official split's training and validation images{which}" if profile.count_split == "official" else
              f"every real image{which}, each fold's test images included (their pixels and count category, "
              "never their points)")
    if profile.diffusion_model == PRIOR:
        model = ("a diffusion prior trained in this run on the pixels of every real image, test images included "
                 "(no points, no counts)")
    elif profile.random_diffusion:
        model = f"{profile.diffusion_model} with random weights (it learnt nothing from any image)"
    else:
        model = f"{profile.diffusion_model} as published (it never saw this run's images)"
    return ["Real (and the classical counter): each fold's training images, never its test images (the deep "
            "models hold a share of the training images out for validation).",
            f"Syn-HC: drawn from the points of every real image{which}; an image drawn from a test image is left "
            "out of that fold.",
            f"InST: those Syn-HC images, each restyled after its real partner, with style tokens trained on {tokens}, "
            f"and {model}."]


def protocol_statement(cv_dir) -> list[str]:
    """Plain sentences saying which recipe, split and exclusions produced the numbers of ``cv_dir``."""
    p, table = protocol(cv_dir), protocol_table(cv_dir)
    out = [f"Counting recipe: '{p['recipe']}'; split: {SPLIT_WORDS[p['split']].format(folds=p['folds'])}; "
           + (f"every deep run counted with the density-map head (U-Net decoder, {_density_targets(p)}), so the "
              "mixing variants differ in the mixing only." if p["head"] == "density" else
              "every deep run counted with the paper's regression head"
              + (" and its 1x1 density helper, so the mixing variants differ in the mixing only." if p["density"]
                 else "."))]
    synthetic = table[table["source"] != "real"]
    if len(synthetic) and "excluded" in synthetic:
        per_fold = synthetic.groupby("fold")["excluded"].max()
        folds = ", ".join(f"fold {k}: {int(v)}" for k, v in per_fold.items())
        out.append(f"{p['excluded']} synthetic images (counted once per source and fold) were left out of the folds "
                   f"whose test images they were drawn from (most for one source: {folds}); images whose manifest "
                   "names no origin (random layouts, external sets such as Cell200-s) cannot be checked and were kept.")
    if len(synthetic) and "pretrain_epoch" in synthetic:
        kept = synthetic["pretrain_epoch"].dropna().astype(int)
        if len(kept):
            why = ("each stage keeps its last epoch (the validation MAE is recorded, not used to choose)"
                   if p["keep"] == "last" else "each stage keeps the trained epoch of lowest validation MAE, as in "
                   "the authors' code, so pre-training always changes the starting weights")
            out.append(f"Pre-training kept epoch {kept.min()}" + (f" to {kept.max()}" if kept.max() > kept.min() else "")
                       + f" of {int(synthetic['epochs'].max())}: {why}.")
    return out
