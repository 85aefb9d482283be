"""The ``instlib`` command line: one command per pipeline stage, thin over the library.

What a terminal shows is ``APP_HELP`` and the commands' docstrings and option help: plain words, one
line per paragraph (the help formatter keeps line breaks), no Sphinx markup.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

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


def _shard(text: str | None) -> tuple[int, int] | None:
    from instlib.runs.shard import parse_shard

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
    overwrite: Overwrite = False,
) -> None:
    """Download a public dataset (checksums verified), convert it to the folder format, print SHA-256s."""
    from instlib.data.fetch import fetch

    _report_import(fetch(dataset, dest, cache=cache, overwrite=overwrite))


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


def _number_or_auto(text: str, option: str, auto: bool = True, without_auto: str = "") -> float | str:
    """``text`` as a number, or ``"auto"`` where ``auto`` allows it (``without_auto`` says why not)."""
    if text == "auto" and auto:
        return text
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{option} must be a number{' or auto' if auto else without_auto}, "
                                 f"got {text!r}") from None


def _cell_size(text: str, auto: bool) -> float | str:
    return _number_or_auto(text, "--cell-size", auto, " (auto needs --from-points)")


def _sigma(text: str | None) -> float | str | None:
    return None if text is None else _number_or_auto(text, "--sigma")


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    from_points: Annotated[Optional[Path], typer.Option(help="Real folder whose points to draw (one image each).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Gradual mode: K images per real image, first n_k cells.")] = None,
    n: Annotated[Optional[int], typer.Option(help="Random layouts: number of images.")] = None,
    size: Annotated[Optional[tuple[int, int]], typer.Option(help="Canvas H W (default: the real image's).")] = None,
    cells: Annotated[Optional[tuple[int, int]], typer.Option(help="Random layouts: cells per image, LO HI.")] = None,
    cell_size: Annotated[str, typer.Option(help="Cell size cs: semi-axes ~ U[0.4 cs, 0.6 cs); 'auto' (with "
                                                "--from-points): measured on the real images at their points.")] = "15",
    stain: Annotated[Optional[str], typer.Option(help="With --from-points: draw only the real images of this "
                                                      "stain (the manifest's 'stain' column), e.g. DAPI.")] = None,
    names: Annotated[Optional[str], typer.Option("--names", help="With --from-points: draw only the real images "
                                                                 "whose name matches this glob.")] = None,
    seed: Seed = 0,
    workers: Annotated[int, typer.Option(help="Processes (output does not depend on it).")] = 1,
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Hard-coded synthetic images (Syn-HC): from a real folder's points, or random layouts."""
    from instlib.data import synth as syn

    if from_points is None and (stain is not None or names is not None):
        raise typer.BadParameter("--stain/--names select real images: they need --from-points")
    if from_points is not None:
        if n is not None or cells is not None:
            raise typer.BadParameter("--n/--cells are for random layouts; drop them with --from-points")
        path = syn.synthesize_from_points(from_points, out, cell_size=_cell_size(cell_size, auto=True), seed=seed,
                                          steps=steps, size=size, select=_select(stain, names), overwrite=overwrite,
                                          workers=workers, shard=_shard(shard))
    elif n is not None and size is not None and cells is not None:
        path = syn.synthesize_random(out, n, size, cells, cell_size=_cell_size(cell_size, auto=False), seed=seed,
                                     overwrite=overwrite, workers=workers, shard=_shard(shard))
    else:
        raise typer.BadParameter("give --from-points REALDIR, or --n N --size H W --cells LO HI")
    typer.echo(f"wrote {path}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    n: Annotated[int, typer.Option(help="Number of images.")],
    size: Annotated[tuple[int, int], typer.Option(help="Image H W.")],
    cells: Annotated[tuple[int, int], typer.Option(help="Nuclei per image, LO HI.")],
    seed: Seed = 0,
    color: Annotated[str, typer.Option(help="gray, or dapi for a blue RGB rendering.")] = "gray",
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Real-like fluorescence images with exact points: the offline stand-in for real data."""
    from instlib.data.simulate import simulate as run

    path = run(out, n, size, cells, seed=seed, color=color, overwrite=overwrite, shard=_shard(shard))
    typer.echo(f"wrote {path}")


# ---------------------------------------------------------------- style

DiffusionModelOpt = Annotated[str, typer.Option(help="Hub id, local diffusers folder (e.g. a prior from 'instlib style prior'), 'tiny' (offline tests) or 'sd14-random'.")]
ImageEncoderOpt = Annotated[Optional[str], typer.Option(help="CLIP image encoder: hub id or folder "
                                                               "(default: the model's image_encoder/ or CLIP ViT-L/14).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, ... (default: the GPU if any).")]
StainOpt = Annotated[Optional[str], typer.Option(help="Only style images of this stain (the style folder "
                                                      "manifest's 'stain' column), e.g. DAPI.")]
NamesOpt = Annotated[Optional[str], typer.Option("--names", help="Only style images whose name matches this glob, "
                                                                 "e.g. '*_DAPI_*'.")]


def _components(model: str, image_encoder: str | None, device: str | None):
    from instlib.style import load_components

    return load_components(model, image_encoder=image_encoder, device=device)


@style_app.command("train")
def style_train(
    style: Annotated[Path, typer.Option(help="Style folder (folder format, or a folder of images).")],
    out: Annotated[Path, typer.Option(help="Token file to write, e.g. token.safetensors.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps (the paper's tokens: about 1000).")],
    model: DiffusionModelOpt = "CompVis/stable-diffusion-v1-4",
    image_encoder: ImageEncoderOpt = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Images per step (per process).")] = 1,
    resolution: Annotated[int, typer.Option(help="Square training size in pixels.")] = 512,
    seed: Seed = 0,
    category: Annotated[Optional[tuple[int, int]], typer.Option(help="Train on style images with LO..HI cells only.")] = None,
    stain: StainOpt = None,
    names: NamesOpt = None,
    geometry: Annotated[str, typer.Option(help="resize (the whole image, as the reference) or "
                                               "center-crop.")] = "resize",
    reference_clip_input: Annotated[bool, typer.Option("--reference-clip-input", help="Feed CLIP the reference's "
                                                       "uint8 cast of the [-1, 1] image (a near-binary mask), as "
                                                       "the authors' code; recorded in the token.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every K steps.")] = 500,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")] = False,
) -> None:
    """Train a style token (rerun the same command to resume; works under 'accelerate launch')."""
    from instlib.style import train_style_token

    path = train_style_token(style, out, _components(model, image_encoder, device), steps=steps, lr=lr,
                             batch_size=batch_size, resolution=resolution, seed=seed, category=category,
                             select=_select(stain, names), geometry=geometry,
                             reference_clip_input=reference_clip_input, checkpoint_every=checkpoint_every,
                             overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("transfer")
def style_transfer(
    content: Annotated[Path, typer.Option(help="Content folder (folder format, e.g. Syn-HC).")],
    style: Annotated[Path, typer.Option(help="Style folder (paired by file name) or one style image for all.")],
    token: Annotated[Path, typer.Option(help="Token file, or a folder of category tokens.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    model: DiffusionModelOpt = "CompVis/stable-diffusion-v1-4",
    image_encoder: ImageEncoderOpt = None,
    strength: Annotated[float, typer.Option(help="Share of the diffusion run; more = more style, less structure.")] = 0.7,
    steps: Annotated[int, typer.Option(help="DDIM grid size (strength x steps are run).")] = 50,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 10.0,
    adain: Annotated[bool, typer.Option("--adain/--no-adain", help="Latent AdaIN of content to style.")] = True,
    inversion: Annotated[str, typer.Option(help="stochastic (UNet-predicted noise) or noise (plain img2img).")] = "stochastic",
    reference_timesteps: Annotated[bool, typer.Option("--reference-timesteps", help="Encode at int(strength x 1000) "
                                                      "but decode from the DDIM grid, as the reference.")] = False,
    resolution: Annotated[int, typer.Option(help="Square tile the networks see; outputs keep the content's size "
                                                 "and pixel grid.")] = 512,
    tiling: Annotated[str, typer.Option(help="blend (overlapping tiles merged every step) or grid "
                                             "(non-overlapping tiles, as the reference's data).")] = "blend",
    stain: StainOpt = None,
    names: NamesOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch (results do not depend on it).")] = 1,
    seed: Seed = 42,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Style content images with their paired real images; labels copied, fidelity measured (resumable)."""
    from instlib.style import transfer_folder

    path = transfer_folder(content, style, token, out, _components(model, image_encoder, device), strength=strength,
                           steps=steps, guidance=guidance, adain=adain, inversion=inversion,
                           reference_timesteps=reference_timesteps, batch_size=batch_size, seed=seed,
                           resolution=resolution, tiling=tiling, select=_select(stain, names), shard=_shard(shard),
                           overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("prior")
def style_prior(
    real: Annotated[list[Path], typer.Option(help="Real image folder (repeat for several); points are never read.")],
    out: Annotated[Path, typer.Option(help="Folder to write the prior to (diffusers layout); use it as --model.")],
    resolution: Annotated[int, typer.Option(help="Square training crop size in pixels.")] = 64,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 600,
    batch_size: Annotated[int, typer.Option(help="Crops per step.")] = 16,
    seed: Seed = 0,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")] = False,
) -> None:
    """Train a diffusion prior from scratch on real images (rerun the same command to resume)."""
    from instlib.style.models import default_device
    from instlib.style.prior import PriorConfig, train_prior

    config = PriorConfig(steps=steps, resolution=resolution, batch_size=batch_size, seed=seed)
    path = train_prior(real, out, config, device=device or default_device(), overwrite=overwrite)
    typer.echo(f"wrote {path}")


@style_app.command("realism")
def style_realism(
    real: Annotated[Path, typer.Option(help="Real image folder.")],
    fake: Annotated[list[Path], typer.Option(help="Synthetic image folder (repeat for several).")],
    out: Annotated[Path, typer.Option(help="CSV to write (one row per fake folder).")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds (split by image).")] = 5,
    crop: Annotated[int, typer.Option(help="Crop size in pixels.")] = 64,
    stain: StainOpt = None,
    names: NamesOpt = None,
    seed: Seed = 0,
) -> None:
    """Real-vs-fake classifier accuracy (0.5 = indistinguishable, 1.0 = trivially separable); --stain and
    --names pick the real images to compare against (e.g. the stain the fakes were styled after)."""
    from instlib.style.realism import realism

    table = realism(real, fake, folds=folds, crop=crop, seed=seed, select=_select(stain, names), out=out)
    for row in table.itertuples():
        typer.echo(f"{row.fake}: realism accuracy {row.accuracy:.3f} +- {row.std:.3f} ({row.folds} folds)")
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

# Training options shared by 'count train' and 'count cv'; None keeps the recipe's value (TrainConfig's default).
RecipeOpt = Annotated[Optional[str], typer.Option(help="Training recipe: authors (the authors' code: dropout and drop-path 0.2, no weight decay, StepLR(10, 0.1), 25 epochs, IDCIA normalisation) or instlib (default: instlib).")]
SplitOpt = Annotated[Optional[str], typer.Option(help="stratified (count-stratified folds and validation images) or official (the real folder's manifest column 'split': train/val/test) (default: stratified).")]
DensityOpt = Annotated[Optional[bool], typer.Option("--density/--no-density", help="Regression head only: add the 1x1 density helper and its loss, in every run alike (dacs with --head regression needs it) (default: off).")]
BackboneOpt = Annotated[Optional[str], typer.Option("--model", help="timm backbone (default: efficientnet_b0; test_efficientnet for quick runs).")]
PretrainedOpt = Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="Start from ImageNet weights (cached, or downloaded when online) (default: pretrained).")]
EpochsOpt = Annotated[Optional[int], typer.Option(help="Epochs of pre-training (of training when there is no fine-tuning) (default: the recipe's, 50 or 25).")]
FinetuneEpochsOpt = Annotated[Optional[int], typer.Option(help="Epochs of fine-tuning on the real images (default: the recipe's, 50 or 25).")]
LrOpt = Annotated[Optional[float], typer.Option(help="Adam learning rate (default: the recipe's, 1e-3 for instlib, 1e-4 for authors).")]
BatchOpt = Annotated[Optional[int], typer.Option(help="Crops per training batch (default: 8).")]
CropOpt = Annotated[Optional[int], typer.Option(help="Crop (and tile) size in pixels (default: 200).")]
NormOpt = Annotated[Optional[str], typer.Option(help="Normalisation: data (real training images), idcia (0.0414/0.0203), imagenet (default: the recipe's).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option(help="Cap on steps per epoch (quick runs).")]
MaxImagesOpt = Annotated[Optional[int], typer.Option(help="Use at most this many images of the training folders.")]
CropsPerImageOpt = Annotated[Optional[int], typer.Option(help="Random crops per image and epoch when --crops-per-epoch is 0 (default: 1).")]
CropsPerEpochOpt = Annotated[Optional[int], typer.Option(help="Random crops per epoch, whatever the number of images; 0: passes over the images (default: the recipe's, 128 for instlib, 0 for authors).")]
HeadOpt = Annotated[Optional[str], typer.Option(help="Counting head: regression (the paper's pooled count) or density (U-Net density map) (default: the recipe's, density for instlib, regression for authors).")]
SigmaOpt = Annotated[Optional[str], typer.Option(help="Density head: std in pixels of the Gaussian target around each point, or auto (the default): the cells' blob scale, diameter / 2.8, measured on the real training images.")]
IntensityOpt = Annotated[Optional[float], typer.Option(help="Scale each image so this percentile of its pixels is 255, e.g. 99.9 (default: off).")]
KeepOpt = Annotated[Optional[str], typer.Option(help="Epoch each stage keeps: best (lowest validation MAE, the authors') or last (default: the recipe's, last for instlib, best for authors).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, ...; default: the GPU when there is one.")]


def _count_config(**overrides):
    from instlib.count.train import TrainConfig, with_overrides

    return with_overrides(TrainConfig(), **overrides)


def _count_summary(metrics: dict) -> str:
    c = metrics["center"]
    return (f"MAE {metrics['mae']:.2f}, RMSE {metrics['rmse']:.2f}, ACP {metrics['acp']:.1f}% on {metrics['n']} "
            f"test images (centre crops: MAE {c['mae']:.2f}, RMSE {c['rmse']:.2f}, ACP {c['acp']:.1f}%)")


@count_app.command("train")
def count_train(
    train: Annotated[list[Path], typer.Option("--train", help="Folder to (pre-)train on; repeat for several.")],
    test: Annotated[Path, typer.Option(help="Held-out real folder to test on.")],
    out: Annotated[Path, typer.Option(help="Run folder (metrics.json, predictions.csv, model.safetensors); an interrupted run resumes.")],
    finetune: Annotated[Optional[Path], typer.Option(help="Real folder to fine-tune on after pre-training.")] = None,
    mix: Annotated[Optional[str], typer.Option(help="Mix pre-training batches with --mix-with: none, cutmix, dacs (default: none).")] = None,
    mix_with: Annotated[Optional[Path], typer.Option(help="Target-domain folder to mix with (unlabelled under dacs).")] = None,
    model: BackboneOpt = None, pretrained: PretrainedOpt = None, epochs: EpochsOpt = None,
    finetune_epochs: FinetuneEpochsOpt = None, lr: LrOpt = None, batch_size: BatchOpt = None,
    crop_size: CropOpt = None, seed: Annotated[Optional[int], typer.Option(help="Random seed (default: 42).")] = None,
    norm: NormOpt = None, max_steps: MaxStepsOpt = None, max_images: MaxImagesOpt = None,
    crops_per_image: CropsPerImageOpt = None, crops_per_epoch: CropsPerEpochOpt = None, head: HeadOpt = None,
    sigma: SigmaOpt = None, intensity_percentile: IntensityOpt = None, device: DeviceOpt = None,
    recipe: RecipeOpt = None, split: SplitOpt = None, density: DensityOpt = None, keep: KeepOpt = None,
) -> None:
    """Pre-train on --train, fine-tune on --finetune, keep an epoch per stage (--keep), test on --test.

    Training images drawn from a test image (manifest column 'origin') are left out and counted.
    """
    from instlib.count import train_run

    config = _count_config(model=model, pretrained=pretrained, epochs=epochs, finetune_epochs=finetune_epochs,
                           lr=lr, batch_size=batch_size, crop_size=crop_size, seed=seed, mix=mix, norm=norm,
                           max_steps=max_steps, max_images=max_images, crops_per_image=crops_per_image,
                           crops_per_epoch=crops_per_epoch, head=head, sigma=_sigma(sigma),
                           intensity_percentile=intensity_percentile, recipe=recipe, split=split, density=density,
                           keep=keep)
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
def count_cv(
    real: Annotated[Path, typer.Option(help="Real folder to cross-validate on.")],
    out: Annotated[Path, typer.Option(help="Output folder: runs/, results.csv, summary.csv; a killed grid resumes.")],
    folds: Annotated[int, typer.Option(help="Folds, stratified by count (seed 42); ignored with --split official.")] = 5,
    pretrain_on: Annotated[Optional[list[str]], typer.Option("--pretrain-on", help="Source to pre-train on, as DIR or NAME=DIR; repeat (same NAME joins folders).")] = None,
    real_baseline: Annotated[bool, typer.Option("--real-baseline/--no-real-baseline", help="Include the source 'real' (no pre-training).")] = True,
    mix: Annotated[Optional[list[str]], typer.Option("--mix", help="Mixing variants to run: none, cutmix, dacs; repeat (default: none).")] = None,
    seed: Annotated[Optional[list[int]], typer.Option("--seed", help="Training seeds; repeat (default: 42).")] = None,
    shard: ShardOpt = None,
    model: BackboneOpt = None, pretrained: PretrainedOpt = None, epochs: EpochsOpt = None,
    finetune_epochs: FinetuneEpochsOpt = None, lr: LrOpt = None, batch_size: BatchOpt = None,
    crop_size: CropOpt = None, norm: NormOpt = None, max_steps: MaxStepsOpt = None,
    max_images: MaxImagesOpt = None, crops_per_image: CropsPerImageOpt = None,
    crops_per_epoch: CropsPerEpochOpt = None, head: HeadOpt = None, sigma: SigmaOpt = None,
    intensity_percentile: IntensityOpt = None, device: DeviceOpt = None,
    recipe: RecipeOpt = None, split: SplitOpt = None, density: DensityOpt = None, keep: KeepOpt = None,
) -> None:
    """Cross-validate sources x mixing x folds x seeds; one row per run in OUT/results.csv, means in summary.csv.

    --split official replaces the folds by the real folder's own split. Synthetic images drawn from a
    fold's test images are left out of that fold (column 'excluded').
    """
    from instlib.count import cross_validate, summarize

    config = _count_config(model=model, pretrained=pretrained, epochs=epochs, finetune_epochs=finetune_epochs,
                           lr=lr, batch_size=batch_size, crop_size=crop_size, norm=norm, max_steps=max_steps,
                           max_images=max_images, crops_per_image=crops_per_image, crops_per_epoch=crops_per_epoch,
                           head=head, sigma=_sigma(sigma), intensity_percentile=intensity_percentile, recipe=recipe,
                           split=split, density=density, keep=keep)
    results = cross_validate(real, out, config, sources=_sources(pretrain_on or [], real_baseline),
                             mixes=tuple(mix or ["none"]), seeds=tuple(seed or [42]), folds=folds,
                             shard=_shard(shard), device=device)
    typer.echo(summarize(results).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    typer.echo(f"{out}: {len(results)} finished runs in results.csv")


# ---------------------------------------------------------------- reproduce


@app.command("reproduce")
def reproduce_cmd(
    profile: Annotated[str, typer.Option(help="smoke (CI, < 5 min), demo (laptop, < 20 min) or paper (GPU).")] = "demo",
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/PROFILE).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run every notebook again, even unchanged ones (finished "
                                        "work in the run folder is still reused; delete the folder to redo it).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a profile field, e.g. --set diffusion_model=/models/sd14 "
                                           "(repeatable; --show lists the fields).")] = None,
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
