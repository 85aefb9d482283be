"""Run the ``instlib`` console entry point in-process, as a user's shell would."""

from __future__ import annotations

import sys

from instlib.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``instlib ARGS...``."""
    old, sys.argv = sys.argv, ["instlib", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err
