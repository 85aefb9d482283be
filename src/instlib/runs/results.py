"""The summary of a run beside the paper's numbers, and what the comparison can and cannot show.

The paper's numbers live in ``paper_results.csv`` beside this module (from the published abstract;
rows marked ``exact = false`` are derived or unpublished, and say so in ``note``).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from instlib.data.atomic import read_json
from instlib.data.tables import read_table
from instlib.runs.folders import CV_FILE, PREDICTIONS_FILE, RESULT_FILE, RESULTS_FILE, RUNS_DIR, SUMMARY_FILE
from instlib.runs.profiles import PRIOR, Profile

METRICS = ("mae", "rmse", "acp")
#: Source names used for run folders (no '-') and the names the paper and the figures use.
SOURCE_LABELS = {"real": "real", "synhc": "Syn-HC", "cell200": "Cell200-s", "inst": "InST",
                 "classical": "classical (no training)"}
SOURCE_ORDER = list(SOURCE_LABELS.values())
# The numeric columns of a cross-validation's tables (every other column, e.g. source, mix, model, name,
# stain, is text); summary.csv has ``<metric>_mean`` / ``_std`` / ``_ci`` for every metric of results.csv.
RESULTS_NUMBERS = ("fold", "seed", "mae", "rmse", "acp", "mae_center", "rmse_center", "acp_center", "n_test", "epochs",
                   "finetune_epochs", "sigma", "wall_s", "excluded", "pretrain_epoch", "final_epoch")
PREDICTIONS_NUMBERS = ("true", "pred", "true_center", "pred_center")


def _summary_number(column: str) -> bool:
    return column.endswith(("_mean", "_std", "_ci")) or column in ("runs", "seeds")


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


def mean_pm(mean: float, spread: float, digits: int = 2) -> str:
    """``"25.95 ± 1.20"`` (``"25.95"`` without a spread, ``"-"`` when missing)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if spread is None or (isinstance(spread, float) and math.isnan(spread)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def metrics_table(summary: pd.DataFrame, *, by: tuple[str, ...] = ("source",)) -> pd.DataFrame:
    """``mean ± 95% interval over training seeds`` strings per metric, one row per ``by``.

    A row with one seed shows its mean alone: one seed has no spread to show.
    """
    rows = []
    for _, r in summary.iterrows():
        row = {k: r[k] for k in by}
        for m in METRICS:
            if f"{m}_mean" in r:
                row[LABELS[m]] = mean_pm(r[f"{m}_mean"], r.get(f"{m}_ci"))
        if "excluded_mean" in r and not pd.isna(r["excluded_mean"]):
            row["excluded / run"] = f"{r['excluded_mean']:.1f}"
        for k in ("seeds", "runs"):
            if k in r and not pd.isna(r[k]):
                row[k] = int(r[k])
        rows.append(row)
    return pd.DataFrame(rows).set_index(list(by))


def beside_paper(summary: pd.DataFrame, mix: str = "none") -> pd.DataFrame:
    """This run's MAE/RMSE/ACP per source (mean ± 95% interval over seeds) beside the paper's MAE."""
    ours = summary[summary["mix"] == mix] if "mix" in summary else summary
    paper = paper_results()
    paper = paper[(paper["mix"] == mix) & (paper["metric"] == "mae")].set_index("source")
    sources = list(dict.fromkeys([*ours["source"], *paper.index]))
    rows = []
    for s in sources:
        r = ours[ours["source"] == s]
        row = {"source": s}
        for m in METRICS:
            row[f"this run: {LABELS[m]}"] = (mean_pm(r[f"{m}_mean"].iloc[0], r.get(f"{m}_ci", pd.Series([None])).iloc[0])
                                             if len(r) and f"{m}_mean" in r else "not run")
        if s in paper.index and not math.isnan(paper.loc[s, "value"]):
            v = paper.loc[s, "value"]
            row["paper: MAE"] = f"{v:.2f}" if paper.loc[s, "exact"] else f"~{v:.0f} (derived)"
        else:
            row["paper: MAE"] = "-"
        rows.append(row)
    return pd.DataFrame(rows).set_index("source")


def comparison_sentence(row: Any) -> str:
    """One comparison of :func:`instlib.count.compare.compare` in words: claimed, or not detected at this size."""
    a, b, d = row.a, row.b, row.delta_mae
    measured = (f"{a} minus {b}: {d:+.2f} cells per test image, 95% interval {row.ci_low:+.2f} to {row.ci_high:+.2f}, "
                f"Holm-corrected p = {row.p_holm:.2g}, {row.n_images} test images x {row.n_seeds} seed(s)")
    if row.claimed:
        better, worse, share = (a, b, row.share_a_better) if d < 0 else (b, a, 1 - row.share_a_better)
        return (f"{better} counted the same test images better than {worse} ({measured}; {better} had the lower "
                f"MAE in {share:.0%} of the seeds).")
    detectable = f"; the smallest difference this run could have detected is about {row.mde:.1f} cells" \
        if not math.isnan(row.mde) else ""
    return f"No difference detected between {a} and {b} at this size ({measured}{detectable})."


#: The comparisons the results page states, as (first, second, what the paper reports for them).
KEY_COMPARISONS = (("InST", "Syn-HC", "the paper: InST up to 37% lower MAE than Syn-HC"),
                   ("InST", "real", "the paper: 25.95 against 27.74"),
                   ("real", SOURCE_LABELS["classical"], "a counter trained on the real images against none"))


def statement(profile: Profile, comparisons: pd.DataFrame | None, *, cell200: bool | None = None, cv_dir=None
              ) -> tuple[list[str], list[str]]:
    """Two lists of plain sentences: what this run's numbers show, and what they do not.

    What they show comes from the paired ``comparisons`` (:func:`instlib.count.compare.compare`): a
    difference is stated only when it is claimed there; otherwise the sentence says that no difference was
    detected at this size. With ``cv_dir`` (the cross-validation folder) the recipe is weighed too.
    """
    shows, not_shows = [], []
    for a, b, context in KEY_COMPARISONS:
        row = _pair(comparisons, a, b)
        if row is not None:
            shows.append(f"{comparison_sentence(row)[:-1]} ({context}).")
    if comparisons is not None and len(comparisons):
        claimed = int(comparisons["claimed"].sum())
        shows.append(f"Of all {len(comparisons)} pairs of rows compared on the same test images, {claimed} "
                     f"differ beyond chance after Holm's correction (the figure above and comparisons.csv).")
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
    count = profile.count
    if count.epochs < 20 or count.finetune_epochs < 20:
        small.append(f"{count.epochs} pre-training and {count.finetune_epochs} fine-tuning epochs")
    if not count.pretrained:
        small.append(f"{count.backbone} without ImageNet weights")
    if profile.cv.folds < 5:
        small.append(f"{profile.cv.folds}-fold instead of 5-fold cross-validation")
    if small:
        not_shows.append("The counting models are far from converged settings (" + "; ".join(small) + "), so "
                         "the absolute errors mostly measure the budget, not the data source.")
    if _pair(comparisons, "InST", "real") is not None and count.finetune_epochs > 0:
        not_shows.append(f"Real-only runs train for {count.epochs} epochs; runs with a pre-training source "
                         f"train for {count.epochs} + {count.finetune_epochs}, so part of any gain over "
                         "real-only can be the longer training.")
    if len(profile.cv.seeds) < 3:
        not_shows.append(f"{len(profile.cv.seeds)} training seed(s) per row: the comparisons average each test "
                         "image's error over too few runs to say how much training randomness alone moves a row.")
    if cell200 is False:
        not_shows.append("Cell200-s was not available to this run, so it is missing from the comparison "
                         "(pass a folder with --set data.cell200=PATH).")
    recipe = protocol(cv_dir)["recipe"] if cv_dir is not None else None
    if recipe is not None and recipe != "authors":
        not_shows.append(f"The counting models were trained with the '{recipe}' recipe, not the authors' (dropout "
                         "and stochastic depth 0.2, no weight decay, StepLR(10, 0.1), IDCIA normalisation, default "
                         "head init): part of any difference from the paper's numbers can be the recipe.")
    if profile.name == "paper" and not not_shows:
        not_shows.append("The paper does not publish every training detail (epochs, schedule); differences of "
                         "a few MAE points from its numbers are within what such details can change.")
    return shows, not_shows


def _pair(comparisons: pd.DataFrame | None, a: str, b: str) -> Any:
    """The row comparing ``a`` with ``b`` (either order, turned to read ``a`` minus ``b``), or None."""
    if comparisons is None:
        return None
    for first, second, sign in ((a, b, 1), (b, a, -1)):
        hit = comparisons[(comparisons["a"] == first) & (comparisons["b"] == second)]
        if len(hit):
            r = hit.iloc[0].copy()
            if sign < 0:
                r["a"], r["b"], r["delta_mae"] = a, b, -r["delta_mae"]
                r["ci_low"], r["ci_high"] = -hit.iloc[0]["ci_high"], -hit.iloc[0]["ci_low"]
                r["share_a_better"] = 1 - r["share_a_better"]
            return r
    return None


def finite_metrics(summary: pd.DataFrame) -> bool:
    """True when every mean metric of the summary is a finite number."""
    cols = [f"{m}_mean" for m in METRICS if f"{m}_mean" in summary]
    return bool(cols) and bool(np.isfinite(summary[cols].to_numpy(dtype=float)).all())


def cv_predictions(cv_dir, mix: str | None = "none"):
    """Every test prediction of a cross-validation folder: source, mix, fold, seed, name, true, pred."""
    frames = []
    for result in sorted(Path(cv_dir).glob(f"{RUNS_DIR}/*/{RESULT_FILE}")):
        meta = read_json(result)
        if mix is not None and meta.get("mix") != mix:
            continue
        pred = result.with_name(PREDICTIONS_FILE)
        if pred.is_file():
            df = read_table(pred, numbers=PREDICTIONS_NUMBERS)
            frames.append(df.assign(source=meta["source"], mix=meta["mix"], fold=meta["fold"], seed=meta["seed"]))
    if not frames:
        return pd.DataFrame(columns=["source", "mix", "fold", "seed", "name", "true", "pred"])
    return label_sources(pd.concat(frames, ignore_index=True))


def stain_table(cv_dir, *, mixes=("none",), sources=None) -> pd.DataFrame | None:
    """Per source and stain of the test images: the MAE of each seed over its test images of that stain
    (all folds together), mean ± 95% interval over seeds, the images, and the mean count predicted on its
    images with at most one true cell. None when the real images have no stain column."""
    preds = cv_predictions(cv_dir, mix=None)
    if "stain" not in preds or preds["stain"].isna().all():
        return None
    preds = preds[preds["mix"].isin(list(mixes))]
    if sources is not None:
        preds = preds[preds["source"].isin([SOURCE_LABELS.get(s, s) for s in sources])]
    preds = preds.assign(error=(preds["pred"] - preds["true"]).abs())
    rows = []
    for (source, stain), g in preds.groupby(["source", "stain"], sort=False):
        per_seed = g.groupby("seed")["error"].mean()
        k = len(per_seed)
        half = stats.t.ppf(0.975, k - 1) * per_seed.std(ddof=1) / np.sqrt(k) if k > 1 else float("nan")
        few = g[g["true"] <= 1]
        rows.append({"source": source, "stain": stain, "test images": g["name"].nunique(),
                     "MAE": mean_pm(float(per_seed.mean()), half),
                     "mean count on images of 0-1 cells": f"{few['pred'].mean():.1f}" if len(few) else "-"})
    return pd.DataFrame(rows).set_index(["source", "stain"])


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


def protocol_by_fold(cv_dir) -> pd.DataFrame:
    """:func:`protocol_table` with the seeds of a fold in one row when they excluded and kept the same
    (``seeds``: which ones), indexed by source, mix and fold; the trained rows only."""
    df = protocol_table(cv_dir)
    df = df[df["source"] != SOURCE_LABELS["classical"]]
    same = [c for c in df.columns if c != "seed"]
    grouped = df.groupby(same, dropna=False, sort=False)["seed"].agg(lambda s: ", ".join(map(str, sorted(s))))
    return grouped.rename("seeds").reset_index().set_index(["source", "mix", "fold"])


def protocol(cv_dir) -> dict:
    """Recipe, split, number of folds, counting head, epoch kept, and the synthetic images excluded (once per source and fold)."""
    settings = read_json(Path(cv_dir) / CV_FILE)
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
    how = ", half the cells' blob scale measured on each run's real training images" if p["sigma"] == "auto" else ""
    return f"Gaussian targets of σ {lo:g}" + (f"-{hi:g}" if hi > lo else "") + f" px{how}"


def exposure(profile: Profile) -> list[str]:
    """Plain sentences saying which real images, and which of their labels, each source was allowed to see.

    No source gets the points or counts of its own fold's test images (:func:`protocol_statement` counts the
    synthetic images left out for that); what remains is said here: style tokens trained under
    cross-validation, and a diffusion prior trained in the run, saw images that are test images of some fold.
    """
    data = profile.data
    which = f" of stain {data.stain}" if data.stain else f" named '{data.names}'" if data.names else ""
    tokens = (f"the official split's training and validation images{which}" if profile.count.split == "official" else
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
            f"Syn-HC: drawn from the points of every real image{'' if data.synhc_from == 'all' else which}; an image "
            "drawn from a test image is left out of that fold.",
            "InST: those Syn-HC images, each restyled after its real partner"
            + (f" (a partner not {which.strip()} replaced by one that is, of the same field when there is one)"
               if data.synhc_from == "all" and which else "")
            + f", with style tokens trained on {tokens}, and {model}."]


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
