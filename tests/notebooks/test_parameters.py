"""Every profile setting a notebook reads is declared in its parameters cell, so --set reaches it.

The static check here reads ``P.<setting>`` in the notebooks' code; at run time the profile a notebook gets
refuses any setting it did not declare (``instlib.runs.profiles.declared_only``), which also covers the
library's helpers that read the profile (the smoke tests run every notebook).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from instlib.runs.profiles import SETTINGS
from instlib.runs.reproduce import RUN_PARAMETERS, declared_parameters

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    lines = [ln for c in cells if c["cell_type"] == "code" for ln in "".join(c["source"]).splitlines()]
    # IPython magics (%pip, !ls) are not Python: a pass keeps the blocks around them valid.
    return "\n".join(ln[:len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!")) else ln
                     for ln in lines)


def profile_reads(notebook: Path) -> set[str]:
    """The profile settings read as ``P.<name>`` anywhere in the notebook's code."""
    tree = ast.parse(_code(notebook))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "P" and node.attr in SETTINGS}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_setting_read_is_declared(notebook):
    declared = set(declared_parameters(notebook))
    assert set(RUN_PARAMETERS) <= declared
    assert not declared - set(SETTINGS) - set(RUN_PARAMETERS), "declares parameters no profile has"
    undeclared = profile_reads(notebook) - declared
    assert not undeclared, f"{notebook.name} reads {sorted(undeclared)} without declaring them as parameters"


def test_the_check_sees_reads(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["x = P.count.epochs + len(P.cv.seeds)\n", "%time y = 1\n"]}]}
    path = tmp_path / "99_x.ipynb"
    path.write_text(json.dumps(nb))
    assert profile_reads(path) == {"count", "cv"}
