"""The ``instlib`` command line: one command per pipeline stage, thin over the library.

Every command reads and writes the folder format (see :mod:`instlib.data.folder`). User errors
(:class:`~instlib.errors.InstlibError`) are printed as ``error: PATH: PROBLEM`` with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from instlib.errors import InstlibError

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
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


# ---------------------------------------------------------------- data


@data_app.command("check")
def data_check(folder: Path) -> None:
    """Validate a folder; report every problem (exit 0 when clean, 1 otherwise)."""
    from instlib.data.folder import check_folder

    problems = check_folder(folder)
    for p in problems:
        typer.echo(f"{p.path}: {p.message}" if p.path else p.message)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {folder}", err=True)
        raise typer.Exit(1)
    from instlib.data.folder import list_samples

    typer.echo(f"{folder}: OK ({len(list_samples(folder))} images)")


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="Dataset name: idcia.")],
    dest: Annotated[Path, typer.Option(help="Where to write the folder-format copy.")],
    cache: Annotated[Optional[Path], typer.Option(help="Download cache (default: the user cache).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Download a public dataset (checksums verified) and convert it to the folder format."""
    from instlib.data.fetch import fetch

    typer.echo(f"wrote {fetch(dataset, dest, cache=cache, overwrite=overwrite)}")


@data_app.command("import")
def data_import(
    src: Annotated[Path, typer.Argument(help="Folder with images and annotations, searched recursively.")],
    dest: Annotated[Path, typer.Option(help="Where to write the folder-format copy.")],
    fmt: Annotated[str, typer.Option("--format", help="csv: <name>.csv X,Y beside each image; "
                                     "dots: <id>cell.png with <id>dots.png.")] = "csv",
    source: Annotated[str, typer.Option(help="Source label stored in the manifest.")] = "imported",
    overwrite: Overwrite = False,
) -> None:
    """Convert a local dataset to the folder format."""
    from instlib.data.fetch import import_folder

    typer.echo(f"wrote {import_folder(src, dest, source=source, fmt=fmt, overwrite=overwrite)}")


# ---------------------------------------------------------------- synthesis


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    from_points: Annotated[Optional[Path], typer.Option(help="Real folder whose points to draw (one image each).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Gradual mode: K images per real image, first n_k cells.")] = None,
    n: Annotated[Optional[int], typer.Option(help="Random layouts: number of images.")] = None,
    size: Annotated[Optional[tuple[int, int]], typer.Option(help="Canvas H W (default: the real image's).")] = None,
    cells: Annotated[Optional[tuple[int, int]], typer.Option(help="Random layouts: cells per image, LO HI.")] = None,
    cell_size: Annotated[float, typer.Option(help="Cell size cs: semi-axes ~ U[0.4 cs, 0.6 cs).")] = 15.0,
    seed: Seed = 0,
    workers: Annotated[int, typer.Option(help="Processes (output does not depend on it).")] = 1,
    shard: ShardOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Hard-coded synthetic images (Syn-HC): from a real folder's points, or random layouts."""
    from instlib.data import synth as syn

    if from_points is not None:
        if n is not None or cells is not None:
            raise typer.BadParameter("--n/--cells are for random layouts; drop them with --from-points")
        path = syn.synthesize_from_points(from_points, out, cell_size=cell_size, seed=seed, steps=steps, size=size,
                                          overwrite=overwrite, workers=workers, shard=_shard(shard))
    elif n is not None and size is not None and cells is not None:
        path = syn.synthesize_random(out, n, size, cells, cell_size=cell_size, seed=seed, overwrite=overwrite,
                                     workers=workers, shard=_shard(shard))
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

    try:
        path = run(out, n, size, cells, seed=seed, color=color, overwrite=overwrite, shard=_shard(shard))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {path}")


# ---------------------------------------------------------------- style


# ---------------------------------------------------------------- count


# ---------------------------------------------------------------- reproduce


@app.command("reproduce")
def reproduce_cmd(
    profile: Annotated[str, typer.Option(help="smoke (CI, < 5 min), demo (laptop, < 20 min) or paper (GPU).")] = "demo",
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/PROFILE).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run every notebook again, even unchanged ones.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a profile field, e.g. --set diffusion_model=/models/sd14 "
                                           "(repeatable; --show lists the fields).")] = None,
    book: Annotated[bool, typer.Option("--book/--no-book", help="Build the Jupyter Book at the end.")] = True,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved profile and exit.")] = False,
) -> None:
    """Execute every notebook under a profile with papermill, then build the book (RUN/book/_build/html).

    Notebooks whose inputs did not change since the last successful run are skipped; after a
    failure the same command resumes from the notebook that failed.
    """
    from instlib.runs.profiles import get_profile, parse_overrides, resolve_models
    from instlib.runs.reproduce import reproduce

    overrides = parse_overrides(set_)
    if show:
        typer.echo(resolve_models(get_profile(profile, **overrides)).to_yaml(), nl=False)
        return
    reproduce(profile, out, force=force, overrides=overrides, book=book, echo=typer.echo)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except InstlibError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
