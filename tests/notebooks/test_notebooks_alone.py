"""Notebooks run on their own, as a Colab badge opens them: papermill executes one notebook in an empty run
folder under the smoke profile, and it first runs the notebooks before it (through the same driver as
``instlib reproduce``), then itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from instlib.runs.reproduce import declared_parameters

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _outputs(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "\n".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                     for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["04_counting", "06_results"])
def test_a_notebook_alone_in_an_empty_run_folder_runs_the_ones_before_it_then_itself(stem, tmp_path):
    run, out = tmp_path / "run", tmp_path / f"{stem}.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"), str(out), kernel_name="python3",
                               parameters={"profile": "smoke", "run_dir": str(run)}, cwd=str(tmp_path),
                               progress_bar=False)
    earlier = [p.stem for p in NOTEBOOKS if p.stem < stem]
    assert sorted(p.stem for p in (run / "notebooks").glob("*.ipynb")) == earlier
    assert sorted(p.stem for p in (run / ".stamps").glob("*.json")) == earlier
    for name in earlier:  # the driver ran them to their checks
        assert "checks passed" in _outputs(run / "notebooks" / f"{name}.ipynb"), name
    text = _outputs(out)
    assert f"{stem} needs the results of {', '.join(earlier)}" in text and "checks passed" in text


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_knows_its_name_and_installs_only_on_a_fresh_colab_vm(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "notebook_name" in declared_parameters(notebook)
    assert re.search(rf'^notebook_name = "{notebook.stem}"', code[1].source, flags=re.M)
    install = code[0].source
    assert 'if "google.colab" in sys.modules and importlib.util.find_spec("instlib") is None:' in install
    # the package from the repository of the badge (tests/test_publishing.py checks the address)
    assert re.search(r'%pip install --quiet "instlib @ git\+https://github\.com/\S+"$', install, flags=re.M)
