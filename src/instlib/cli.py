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


# ---------------------------------------------------------------- style


# ---------------------------------------------------------------- count


# ---------------------------------------------------------------- reproduce


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except InstlibError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
