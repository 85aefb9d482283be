"""The ``instlib`` command line: one command per pipeline stage, thin over the library.

What a terminal shows is ``APP_HELP`` and the commands' docstrings and option help: plain words, one
line per paragraph (the help formatter keeps line breaks), no Sphinx markup.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

from instlib.config import (Config, GridConfig, PriorConfig, SynHCConfig, TokenTrainingConfig, TrainConfig,
                            TransferConfig)
from instlib.config.base import SettingsError
from instlib.errors import InstlibError

APP_HELP = ("One command per stage of the InST-Microscopy pipeline. Every command reads and writes the folder "
            "format: DIR/images/NAME.png (or .tif, .jpg), DIR/points/NAME.csv with the header X,Y, and "
            "DIR/manifest.csv. Problems with the input are printed as 'error: PATH: PROBLEM' with exit code 2.")
app = typer.Typer(help=APP_HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Check, fetch and import datasets in the folder format.", no_args_is_help=True)
style_app = typer.Typer(help="InST: train style tokens and transfer real style onto synthetic images.", no_args_is_help=True)
count_app = typer.Typer(help="Cell counting: train, cross-validate, predict.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(style_app, name="style")
app.add_typer(count_app, name="count")

Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical output.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an output folder that holds other data.")]
ShardOpt = Annotated[Optional[str], typer.Option(help="Do only shard i of n (0-based), e.g. 0/4.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, ... (default: the GPU if any).")]
StainOpt = Annotated[Optional[str], typer.Option(help="Only the real images of this stain (the folder manifest's "
                                                      "'stain' column), e.g. DAPI: synth draws them, style commands "
                                                      "use them as style.")]
NamesOpt = Annotated[Optional[str], typer.Option("--names", help="Only the real images whose name matches this glob, "
                                                                 "e.g. '*_DAPI_*'.")]


# ---------------------------------------------------------------- options built from a stage's settings


def settings_options(name: str, model: type[Config], *, skip: Collection[str] = (),
                     flags: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Give a command one option per field of ``model`` and pass it the validated settings as ``name``.

    Option names, types and help come from the fields (``flags`` renames some, e.g. ``mixes`` to
    ``--mix``); an option left out keeps the field's default (for a counting run: its recipe's). A bad
    value is reported as click reports its own: ``Invalid value for '--option': problem``.
    """
    flags = dict(flags or {})
    fields = {f: info for f, info in model.model_fields.items() if f not in skip}

    def option_of(field: str) -> str:
        return flags.get(field, "--" + field.replace("_", "-"))

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        options = [inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY,
                                     default=inspect.Parameter.empty if info.is_required() else None,
                                     annotation=Annotated[_option_type(info.annotation),
                                                          typer.Option(*_decls(option_of(field), info.annotation),
                                                                       help=_help(info))])
                   for field, info in fields.items()]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            given = {f: values.pop(f) for f in fields}
            values[name] = settings_from_options(model, given, option_of)
            return command(**values)

        params = [p for p in signature.parameters.values() if p.name != name] + options
        run.__signature__ = signature.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


def settings_from_options(model: type[Config], given: Mapping[str, Any],
                          option_of: Callable[[str], str] = lambda f: "--" + f.replace("_", "-")) -> Config:
    """``model`` from option values (``None`` and empty repeats: not given); errors name the option."""
    given = {f: [part.strip() for item in v for part in item.split(",") if part.strip()] if isinstance(v, list) else v
             for f, v in given.items()}
    try:
        return model(**{f: v for f, v in given.items() if v is not None and v != [] and v != ()})
    except SettingsError as exc:
        field, problem = exc.problems[0]
        raise typer.BadParameter(problem, param_hint=f"'{option_of(field)}'" if field else None) from None


def _bare(annotation: Any) -> Any:
    """The type of a field without ``None``; a choice of names (``Literal``, ``float | Literal``) is text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _bare(args[0]) if len(args) == 1 else str
    return str if typing.get_origin(annotation) is typing.Literal else annotation


def _option_type(annotation: Any) -> Any:
    bare = _bare(annotation)
    if typing.get_origin(bare) is tuple:
        args = typing.get_args(bare)
        # A variable length: repeat the option or separate the values by commas (--seeds 42,43,44); text
        # here, converted by the settings' own check.
        bare = list[str] if args[-1] is Ellipsis else tuple[args]
    return Optional[bare]


def _decls(option: str, annotation: Any) -> tuple[str, ...]:
    """A boolean field gets ``--x/--no-x``; others their one option name."""
    return (f"{option}/--no-{option[2:]}",) if _bare(annotation) is bool else (option,)


def _help(info: Any) -> str:
    text = " ".join((info.description or "").split())
    if info.is_required() or info.default is None or "default" in text:
        return text
    default = ", ".join(map(str, info.default)) if isinstance(info.default, tuple) else info.default
    return f"{text} (default: {default})"


def _shard(text: str | None) -> tuple[int, int] | None:
    from instlib.data.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from exc


def _select(stain: str | None, names: str | None):
    """The image filter of --stain / --names (None when neither is given)."""
    from instlib.data.selection import ImageFilter

    return ImageFilter.of(stain, names) if stain is not None or names is not None else None


# ---------------------------------------------------------------- data


@data_app.command("check")
def data_check(folder: Path) -> None:
    """Validate a folder; report every problem (exit 0 when clean, 1 otherwise)."""
    from instlib.data.folder import check_folder, ignored_files, list_samples
    from instlib.errors import DataError

    if not folder.is_dir():
        raise DataError("no such folder", folder)
    ignored = ignored_files(folder)
    if ignored:
        typer.echo(f"note: ignored {len(ignored)} hidden or system file(s), e.g. {ignored[0]}")
    problems = check_folder(folder)
    for p in problems:
        typer.echo(f"{p.path}: {p.message}" if p.path else p.message)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {folder}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{folder}: OK ({len(list_samples(folder))} images)")


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="Dataset name: idcia.")],
    dest: Annotated[Path, typer.Option(help="Where to write the folder-format copy.")],
    cache: Annotated[Optional[Path], typer.Option(help="Download cache (default: the user cache).")] = None,
    trust_listing: Annotated[bool, typer.Option(help="While instlib's checksum table pins no file yet, accept "
                                                     "the MD5s figshare lists (written to the cache, to pin).")
                             ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Download a public dataset (checksums verified), convert it to the folder format, print SHA-256s."""
    from instlib.data.fetch import fetch

    _report_import(fetch(dataset, dest, cache=cache, overwrite=overwrite, trust_listing=trust_listing))


@data_app.command("import")
def data_import(
    src: Annotated[Path, typer.Argument(help="Folder with images and annotations, searched recursively.")],
    dest: Annotated[Path, typer.Option(help="Where to write the folder-format copy.")],
    fmt: Annotated[str, typer.Option("--format", help="csv: <name>.csv X,Y beside each image; "
                                     "dots: <id>cell.png with <id>dots.png.")] = "csv",
    source: Annotated[str, typer.Option(help="Source label stored in the manifest.")] = "imported",
    pin: Annotated[Optional[Path], typer.Option(help="A checksums.sha256 from an earlier import: refuse "
                                                     "a source whose files differ from it.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert a local dataset to the folder format; prints the SHA-256 of every file it read."""
    from instlib.data.fetch import import_folder

    _report_import(import_folder(src, dest, source=source, fmt=fmt, overwrite=overwrite, pin=pin))


def _report_import(out: Path) -> None:
    """Print the SHA-256 table of the files an import read, so a user can pin them (see book/data.md)."""
    from instlib.data.checksums import CHECKSUMS

    typer.echo((out / CHECKSUMS).read_text(), nl=False)
    typer.echo(f"wrote {out} (SHA-256 of the source files in {out / CHECKSUMS})")


# ---------------------------------------------------------------- synthesis


@app.command()
@settings_options("config", SynHCConfig)
def synth(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    from_points: Annotated[Optional[Path], typer.Option(help="Real folder whose points to draw (one image each).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Gradual mode: K images per real image, first n_k cells.")] = None,
    n: Annotated[Optional[int], typer.Option(help="Random layouts: number of images.")] = None,
    size: Annotated[Optional[tuple[int, int]], typer.Option(help="Canvas H W (default: the real image's).")] = None,
    cells: Annotated[Optional[tuple[int, int]], typer.Option(help="Random layouts: cells per image, LO HI.")] = None,
    stain: StainOpt = None,
    names: NamesOpt = None,
    workers: Annotated[int, typer.Option(help="Processes (output does not depend on it).")] = 1,
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
    config: SynHCConfig = SynHCConfig(),
) -> None:
    """Hard-coded synthetic images (Syn-HC): from a real folder's points, or random layouts."""
    from instlib.data import synth as syn

    if from_points is None and (stain is not None or names is not None):
        raise typer.BadParameter("--stain/--names select real images: they need --from-points")
    if from_points is not None:
        if n is not None or cells is not None:
            raise typer.BadParameter("--n/--cells are for random layouts; drop them with --from-points")
        path = syn.synthesize_from_points(from_points, out, config, steps=steps, size=size,
                                          select=_select(stain, names), overwrite=overwrite, workers=workers,
                                          shard=_shard(shard))
    elif n is not None and size is not None and cells is not None:
        if config.cell_size == "auto":
            raise typer.BadParameter("auto is measured at real points: give a number, or --from-points",
                                     param_hint="'--cell-size'")
        path = syn.synthesize_random(out, n, size, cells, config, overwrite=overwrite, workers=workers,
                                     shard=_shard(shard))
    else:
        raise typer.BadParameter("give --from-points REALDIR, or --n N --size H W --cells LO HI")
    typer.echo(f"wrote {path}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    n: Annotated[int, typer.Option(help="Number of images.")],
    size: Annotated[tuple[int, int], typer.Option(help="Image H W.")],
    cells: Annotated[tuple[int, int], typer.Option(help="Cells per field of view, LO HI.")],
    seed: Seed = 0,
    color: Annotated[str, typer.Option(help="gray, or dapi for a blue RGB rendering.")] = "gray",
    preset: Annotated[str, typer.Option(help="nuclei, or hard: brightness varying several-fold inside an image, "
                                             "saturated clumps, more debris and uneven background.")] = "nuclei",
    stains: Annotated[Optional[str], typer.Option(help="Stains to cycle through, e.g. DAPI,Cy3,GFAP (manifest column "
                                                       "'stain'); a marker stain labels only its positive cells.")] = None,
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Real-like fluorescence images with exact points: the offline stand-in for real data."""
    from instlib.data.simulate import simulate as run

    names = tuple(s.strip() for s in (stains or "").split(",") if s.strip())
    path = run(out, n, size, cells, seed=seed, color=color, config=preset, stains=names, overwrite=overwrite,
               shard=_shard(shard))
    typer.echo(f"wrote {path}")


# ---------------------------------------------------------------- style

DiffusionModelOpt = Annotated[str, typer.Option(help="Hub id, local diffusers folder (e.g. a prior from 'instlib style prior'), 'tiny' (offline tests) or 'sd14-random'.")]
ImageEncoderOpt = Annotated[Optional[str], typer.Option(help="CLIP image encoder: hub id or folder "
                                                               "(default: the model's image_encoder/ or CLIP ViT-L/14).")]


def _components(model: str, image_encoder: str | None, device: str | None):
    from instlib.style import load_components

    return load_components(model, image_encoder=image_encoder, device=device)


@style_app.command("train")
@settings_options("config", TokenTrainingConfig)
def style_train(
    style: Annotated[Path, typer.Option(help="Style folder (folder format, or a folder of images).")],
    out: Annotated[Path, typer.Option(help="Token file to write, e.g. token.safetensors.")],
    model: DiffusionModelOpt = "CompVis/stable-diffusion-v1-4",
    image_encoder: ImageEncoderOpt = None,
    category: Annotated[Optional[tuple[int, int]], typer.Option(help="Train on style images with LO..HI cells only.")] = None,
    stain: StainOpt = None,
    names: NamesOpt = None,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")] = False,
    config: TokenTrainingConfig = TokenTrainingConfig(steps=1),
) -> None:
    """Train a style token (rerun the same command to resume; works under 'accelerate launch')."""
    from instlib.style import train_style_token

    path = train_style_token(style, out, _components(model, image_encoder, device), config, category=category,
                             select=_select(stain, names), overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("transfer")
@settings_options("config", TransferConfig)
def style_transfer(
    content: Annotated[Path, typer.Option(help="Content folder (folder format, e.g. Syn-HC).")],
    style: Annotated[Path, typer.Option(help="Style folder (paired by file name) or one style image for all.")],
    token: Annotated[Path, typer.Option(help="Token file, or a folder of category tokens.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    model: DiffusionModelOpt = "CompVis/stable-diffusion-v1-4",
    image_encoder: ImageEncoderOpt = None,
    stain: StainOpt = None,
    names: NamesOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch (results do not depend on it).")] = 1,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    overwrite: Overwrite = False,
    config: TransferConfig = TransferConfig(),
) -> None:
    """Style content images with their paired real images; labels copied, fidelity measured (resumable)."""
    from instlib.style import transfer_folder

    path = transfer_folder(content, style, token, out, _components(model, image_encoder, device), config,
                           select=_select(stain, names), batch_size=batch_size, shard=_shard(shard),
                           overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("prior")
@settings_options("config", PriorConfig)
def style_prior(
    real: Annotated[list[Path], typer.Option(help="Real image folder (repeat for several); points are never read.")],
    out: Annotated[Path, typer.Option(help="Folder to write the prior to (diffusers layout); use it as --model.")],
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")] = False,
    config: PriorConfig = PriorConfig(),
) -> None:
    """Train a diffusion prior from scratch on real images (rerun the same command to resume)."""
    from instlib.style.models import default_device
    from instlib.style.prior import train_prior

    path = train_prior(real, out, config, device=device or default_device(), overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("realism")
def style_realism(
    real: Annotated[Path, typer.Option(help="Real image folder.")],
    fake: Annotated[list[Path], typer.Option(help="Synthetic image folder (repeat for several).")],
    out: Annotated[Path, typer.Option(help="CSV to write (one row per fake folder).")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds (split by image).")] = 5,
    crop: Annotated[int, typer.Option(help="Crop size in pixels.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Cross-validation runs on new folds and classifiers, "
                                         "averaged (one scatters by about 0.1 on a few dozen images).")] = 1,
    stain: StainOpt = None,
    names: NamesOpt = None,
    seed: Seed = 0,
) -> None:
    """Real-vs-fake classifier accuracy (0.5 = indistinguishable, 1.0 = trivially separable); --stain and
    --names pick the real images to compare against (e.g. the stain the fakes were styled after)."""
    from instlib.style.realism import realism

    table = realism(real, fake, folds=folds, crop=crop, seed=seed, repeats=repeats, select=_select(stain, names),
                    out=out)
    for row in table.itertuples():
        typer.echo(f"{row.fake}: realism accuracy {row.accuracy:.3f} +- {row.std:.3f} "
                   f"({row.folds} folds x {row.repeats} repeats)")
    typer.echo(f"wrote {out}")


@style_app.command("filter")
def style_filter(
    folder: Annotated[Path, typer.Argument(help="A folder written by 'instlib style transfer'.")],
    out: Annotated[Path, typer.Option(help="Folder for the images that pass.")],
    min_fidelity: Annotated[float, typer.Option(help="Keep images whose fidelity recall is at least this.")],
    max_spurious: Annotated[Optional[int], typer.Option(help="Also drop images with more spurious blobs.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Copy the styled images whose labels still fit (fidelity recall >= threshold) into a new folder."""
    from instlib.data.folder import read_manifest
    from instlib.style import filter_by_fidelity

    path = filter_by_fidelity(folder, min_fidelity, out, max_spurious=max_spurious, overwrite=overwrite)
    typer.echo(f"kept {len(read_manifest(path))} of {len(read_manifest(folder))} images in {path}")


@style_app.command("fidelity")
def style_fidelity(
    folder: Annotated[Path, typer.Argument(help="Any folder in the folder format.")],
    csv: Annotated[Optional[Path], typer.Option(help="Also write the per-image table here.")] = None,
) -> None:
    """Measure label fidelity (blob recall at the points, spurious blobs) of every image of a folder."""
    import pandas as pd

    from instlib.data.atomic import atomic_open
    from instlib.style import measure_folder

    table = pd.DataFrame(measure_folder(folder))
    if csv is not None:
        with atomic_open(csv, "w", newline="") as fh:
            table.to_csv(fh, index=False)
    typer.echo(f"{folder}: {len(table)} images, mean recall {table['recall'].mean():.3f}, "
               f"mean spurious blobs {table['spurious'].mean():.1f}")


# ---------------------------------------------------------------- count

def _count_summary(metrics: dict) -> str:
    c = metrics["center"]
    return (f"MAE {metrics['mae']:.2f}, RMSE {metrics['rmse']:.2f}, ACP {metrics['acp']:.1f}% on {metrics['n']} "
            f"test images (centre crops: MAE {c['mae']:.2f}, RMSE {c['rmse']:.2f}, ACP {c['acp']:.1f}%)")


@count_app.command("train")
@settings_options("config", TrainConfig)
def count_train(
    train: Annotated[list[Path], typer.Option("--train", help="Folder to (pre-)train on; repeat for several.")],
    test: Annotated[Path, typer.Option(help="Held-out real folder to test on.")],
    out: Annotated[Path, typer.Option(help="Run folder (metrics.json, predictions.csv, model.safetensors); an interrupted run resumes.")],
    finetune: Annotated[Optional[Path], typer.Option(help="Real folder to fine-tune on after pre-training.")] = None,
    mix_with: Annotated[Optional[Path], typer.Option(help="Target-domain folder to mix with (unlabelled under dacs).")] = None,
    device: DeviceOpt = None,
    config: TrainConfig = TrainConfig(),
) -> None:
    """Pre-train on --train, fine-tune on --finetune, keep an epoch per stage (--keep), test on --test.

    Training images drawn from a test image (manifest column 'origin') are left out and counted.
    """
    from instlib.count import train_run

    metrics = train_run(train, test, out, config, finetune_dir=finetune, mix_with=mix_with, device=device)
    typer.echo(f"{out}: {_count_summary(metrics)}; {metrics['excluded']} training images drawn from test images "
               f"left out; kept epochs {metrics['selected_epochs']}")


@count_app.command("predict")
def count_predict(
    model: Annotated[Path, typer.Option(help="Run folder of 'instlib count train', or its model.safetensors.")],
    data: Annotated[Path, typer.Option(help="Folder with images/ (points/ optional: then true counts are added).")],
    out: Annotated[Path, typer.Option(help="CSV to write: name, pred, pred_center[, true, true_center].")],
    maps: Annotated[Optional[Path], typer.Option(help="Folder to write each image's density map to, as <name>.tiff (float32, sum = count; density models only).")] = None,
    device: DeviceOpt = None,
) -> None:
    """Count the cells of every image of a folder (whole image by tiling, and centre crop)."""
    from instlib.count import predict
    from instlib.data.atomic import atomic_open

    df = predict(model, data, device=device, maps_dir=maps, progress=True)
    with atomic_open(out, "w", newline="") as fh:
        df.to_csv(fh, index=False)
    typer.echo(f"{out}: {len(df)} images, {df['pred'].sum():.0f} cells in all")


@count_app.command("classical")
def count_classical(
    train: Annotated[list[Path], typer.Option("--train", help="Labelled folder to fit the parameters on; repeat for several.")],
    test: Annotated[Path, typer.Option(help="Labelled folder to count and score.")],
    out: Annotated[Optional[Path], typer.Option(help="CSV to write: name, true, pred, true_center, pred_center.")] = None,
    crop_size: Annotated[int, typer.Option(help="Size of the centred box scored as the reference does.")] = 200,
) -> None:
    """Baseline without learning: Gaussian smoothing + local maxima, 3 parameters grid-searched on --train by MAE."""
    from instlib.count.classical import classical_run
    from instlib.data.atomic import atomic_open

    predictions, m = classical_run(train, test, crop_size=crop_size)
    if out is not None:
        with atomic_open(out, "w", newline="") as fh:
            predictions.to_csv(fh, index=False)
    p = m["params"]
    typer.echo(f"{out or test}: MAE {m['mae']:.2f}, RMSE {m['rmse']:.2f}, ACP {m['acp']:.1f}% on {m['n']} test images "
               f"(fitted on {m['n_train']}: sigma {p['sigma']}, min distance {p['min_distance']}, "
               f"threshold {p['threshold']}; training MAE {m['train_mae']:.2f})")


def _sources(items: list[str], real: bool) -> dict[str, list[Path]]:
    sources: dict[str, list[Path]] = {"real": []} if real else {}
    for item in items:
        name, sep, folder = item.partition("=")
        name, folder = (name, folder) if sep else (Path(item).name, item)
        sources.setdefault(name, []).append(Path(folder))
    if not sources:
        raise typer.BadParameter("nothing to run: give --pretrain-on or keep --real-baseline", param_hint="--pretrain-on")
    return sources


@count_app.command("cv")
@settings_options("grid", GridConfig, flags={"mixes": "--mix"})
@settings_options("config", TrainConfig, skip=("seed", "mix"))
def count_cv(
    real: Annotated[Path, typer.Option(help="Real folder to cross-validate on.")],
    out: Annotated[Path, typer.Option(help="Output folder: runs/, results.csv, summary.csv; a killed grid resumes.")],
    pretrain_on: Annotated[Optional[list[str]], typer.Option("--pretrain-on", help="Source to pre-train on, as DIR or NAME=DIR; repeat (same NAME joins folders).")] = None,
    real_baseline: Annotated[bool, typer.Option("--real-baseline/--no-real-baseline", help="Include the source 'real' (no pre-training).")] = True,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    config: TrainConfig = TrainConfig(),
    grid: GridConfig = GridConfig(),
) -> None:
    """Cross-validate sources x mixing x folds x seeds; one row per run in OUT/results.csv, means in summary.csv.

    --split official replaces the folds by the real folder's own split. Synthetic images drawn from a
    fold's test images are left out of that fold (column 'excluded').
    """
    from instlib.count import cross_validate, summarize

    results = cross_validate(real, out, config, grid, sources=_sources(pretrain_on or [], real_baseline),
                             shard=_shard(shard), device=device)
    typer.echo(summarize(results).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    typer.echo(f"{out}: {len(results)} finished runs in results.csv")


@count_app.command("compare")
def count_compare(
    targets: Annotated[list[Path], typer.Argument(help="The --out folder of 'instlib count cv'; or two or more "
                                                       "single runs: 'count train' folders or predictions CSVs.")],
    baseline: Annotated[Optional[str], typer.Option(help="Compare every row with this one only, e.g. real, synhc, "
                                                         "classical or 'InST + cutmix' (default: every pair).")] = None,
) -> None:
    """Paired comparisons of the rows on the same test images: difference in MAE, 95% interval, Holm-corrected p.

    For a cross-validation, writes CV_DIR/comparisons.csv and comparisons.png; a difference is claimed
    only when its interval excludes 0 after correction. Single runs are compared the same way (printed).
    """
    from instlib.count.compare import compare_runs, write_comparisons
    from instlib.runs import figures

    if len(targets) == 1:
        cv_dir = targets[0]
        table = write_comparisons(cv_dir, baseline)
        figures.save(figures.comparison_plot(table), cv_dir / "comparisons.png")
    else:
        if baseline is not None:
            raise InstlibError("--baseline is for a cross-validation folder; with single runs every pair is shown")
        cv_dir, table = None, compare_runs(targets)
    for r in table.itertuples():
        verdict = "claimed" if r.claimed else f"no difference detected (smallest detectable {r.mde:.2f})"
        typer.echo(f"{r.a} - {r.b}: {r.delta_mae:+.2f} cells [{r.ci_low:+.2f}, {r.ci_high:+.2f}], p {r.p_value:.3g}, "
                   f"Holm {r.p_holm:.3g}, {r.n_images} images x {r.n_seeds} seeds: {verdict}")
    if cv_dir is not None:
        typer.echo(f"wrote {cv_dir / 'comparisons.csv'}")


# ---------------------------------------------------------------- reproduce


@app.command("reproduce")
def reproduce_cmd(
    profile: Annotated[str, typer.Option(help="smoke (CI, < 5 min), demo (laptop, < 20 min) or paper (GPU).")] = "demo",
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/PROFILE).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run every notebook again, even unchanged ones (finished "
                                        "work in the run folder is still reused; delete the folder to redo it).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a profile setting, e.g. --set count.epochs=3 or --set "
                                           "diffusion_model=/models/sd14 (repeatable; --show lists them).")] = None,
    book: Annotated[bool, typer.Option("--book/--no-book", help="Build the Jupyter Book at the end.")] = True,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved profile and exit.")] = False,
) -> None:
    """Execute every notebook under a profile with papermill, then build the book (RUN/book/_build/html).

    Notebooks whose inputs did not change since the last successful run are skipped; after a failure the same command resumes from the notebook that failed.
    """
    from instlib.runs.profiles import get_profile, parse_overrides, resolve_models
    from instlib.runs.reproduce import reproduce

    overrides = parse_overrides(set_)
    if show:
        typer.echo(resolve_models(get_profile(profile, **overrides)).to_yaml(), nl=False)
        return
    reproduce(profile, out, force=force, overrides=overrides, book=book, echo=typer.echo)


def main() -> None:
    """Console-script entry point: every user error ends as one ``error: ...`` line and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # a bare group name: its help is the answer
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except click_errors.UsageError as exc:  # an option or argument that click itself rejects
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(f"{exc.format_message()}{where}")
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", code=130)
    except InstlibError as exc:
        _fail(str(exc))
    except OSError as exc:  # the operating system refused: disk full, permission, read-only, ...
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2) -> NoReturn:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):  # end a progress bar cut short, so the error gets its own line
        bar.close()
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    sys.exit(code)


if __name__ == "__main__":
    main()
