"""The papermill driver: parameters, skipping unchanged notebooks, failures and resuming, the book."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from instlib.errors import InstlibError
from instlib.runs import reproduce as rp
from instlib.runs.profiles import get_profile

SMOKE = get_profile("smoke")


def _nb(cells: list[tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src, tags) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        cell["id"] = f"c{i}"
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def write_notebook(path: Path, body: str, params: str = 'profile = "demo"\nrun_dir = None\nworkers = None\n',
                   title: str | None = None) -> Path:
    cells = [("markdown", f"# {title or path.stem}", []), ("code", params, ["parameters"]),
             ("code", textwrap.dedent(body), [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(_nb(cells), path)
    return path


LOG = """
from pathlib import Path
Path(run_dir, "log.txt").open("a").write("{name}\\n")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny project: three notebooks that log their runs; the second fails while a marker exists."""
    root = tmp_path / "project"
    nbs = root / "notebooks"
    write_notebook(nbs / "01_first.ipynb", LOG.format(name="01") + 'Path(run_dir, "a.txt").write_text(str(workers))\n')
    write_notebook(nbs / "02_second.ipynb", LOG.format(name="02") + textwrap.dedent("""
        if Path(run_dir, "fail").exists():
            raise ValueError("deliberate failure")
        Path(run_dir, "b.txt").write_text(Path(run_dir, "a.txt").read_text() + "!")
        """))
    write_notebook(nbs / "03_third.ipynb", LOG.format(name="03") + 'print("third", profile)\n',
                   params='profile = "demo"\nrun_dir = None\n')
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n\nSee [the first notebook](../notebooks/01_first.ipynb).\n")
    (root / "_config.yml").write_text(textwrap.dedent("""\
        title: Test book
        author: test
        only_build_toc_files: true
        execute:
          execute_notebooks: "off"
        """))
    (root / "_toc.yml").write_text(textwrap.dedent("""\
        format: jb-book
        root: book/intro
        chapters:
        - file: notebooks/01_first
        - file: notebooks/02_second
        - file: notebooks/03_third
        """))
    return root


def _log(run: Path) -> list[str]:
    p = run / "log.txt"
    return p.read_text().split() if p.exists() else []


def _run(project: Path, run: Path, profile=SMOKE, **kw):
    messages: list[str] = []
    res = rp.execute_notebooks(profile, run, notebooks=rp.list_notebooks(project / "notebooks"),
                               echo=messages.append, progress=False, **kw)
    return res, messages


def test_only_declared_parameters_are_passed(project, tmp_path):
    params = rp.notebook_parameters(project / "notebooks" / "01_first.ipynb", SMOKE, tmp_path / "run")
    assert params == {"profile": "smoke", "run_dir": str(tmp_path / "run"), "workers": SMOKE.workers}
    params = rp.notebook_parameters(project / "notebooks" / "03_third.ipynb", SMOKE, tmp_path / "run")
    assert set(params) == {"profile", "run_dir"}


def test_undeclared_profile_parameter_is_a_clear_error(project, tmp_path):
    bad = write_notebook(project / "notebooks" / "04_bad.ipynb", "x = 1\n",
                         params='profile = "demo"\nrun_dir = None\nn_imgs = 3\n')
    with pytest.raises(InstlibError) as info:
        rp.notebook_parameters(bad, SMOKE, tmp_path)
    assert "04_bad.ipynb" in str(info.value) and "n_imgs" in str(info.value) and "workers" in str(info.value)
    # ...and it is found before any notebook runs
    with pytest.raises(InstlibError, match="n_imgs"):
        _run(project, tmp_path / "run")
    assert _log(tmp_path / "run") == []


def test_a_notebook_must_declare_profile_and_run_dir(project, tmp_path):
    bad = write_notebook(project / "notebooks" / "04_bad.ipynb", "x = 1\n", params='profile = "demo"\nworkers = 3\n')
    with pytest.raises(InstlibError, match="04_bad.ipynb.*does not declare run_dir"):
        rp.notebook_parameters(bad, SMOKE, tmp_path)


def test_no_parameters_cell_is_an_error(project, tmp_path):
    nb = nbformat.read(project / "notebooks" / "03_third.ipynb", as_version=4)
    nb.cells[1].metadata["tags"] = []
    nbformat.write(nb, project / "notebooks" / "03_third.ipynb")
    with pytest.raises(InstlibError, match="03_third.ipynb.*parameters"):
        rp.declared_parameters(project / "notebooks" / "03_third.ipynb")


def test_runs_in_order_then_skips_unchanged(project, tmp_path):
    run = tmp_path / "run"
    res, _ = _run(project, run)
    assert [r.status for r in res] == ["ran"] * 3 and _log(run) == ["01", "02", "03"]
    assert (run / "b.txt").read_text() == f"{SMOKE.workers}!"
    executed = nbformat.read(run / "notebooks" / "01_first.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

    res, msgs = _run(project, run)
    assert [r.status for r in res] == ["skipped"] * 3 and _log(run) == ["01", "02", "03"]
    assert "unchanged, skipped" in msgs[0]

    res, _ = _run(project, run, force=True)
    assert [r.status for r in res] == ["ran"] * 3


def test_a_changed_input_reruns_that_notebook_and_the_ones_after(project, tmp_path):
    run = tmp_path / "run"
    _run(project, run)
    # a parameter only 01 declares: 01 reruns, and so do the notebooks after it
    res, _ = _run(project, run, profile=get_profile(SMOKE, workers=5))
    assert [r.status for r in res] == ["ran", "ran", "ran"]
    assert (run / "b.txt").read_text() == "5!"
    # an edit of the second notebook: the first is skipped
    nb_path = project / "notebooks" / "02_second.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[2].source += "\nprint('edited')\n"
    nbformat.write(nb, nb_path)
    res, _ = _run(project, run, profile=get_profile(SMOKE, workers=5))
    assert [r.status for r in res] == ["skipped", "ran", "ran"]
    # a parameter no notebook declares changes nothing
    res, _ = _run(project, run, profile=get_profile(SMOKE, workers=5, **{"count.epochs": 9}))
    assert [r.status for r in res] == ["skipped"] * 3


def test_failure_names_notebook_cell_and_error_then_resumes(project, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "fail").touch()
    with pytest.raises(InstlibError) as info:
        _run(project, run)
    msg = str(info.value)
    assert "02_second" in msg and "cell 3" in msg and "ValueError: deliberate failure" in msg
    assert str(run / "notebooks" / "02_second.ipynb") in msg
    assert _log(run) == ["01", "02"]
    assert not (run / ".stamps" / "02_second.json").exists()
    # the executed notebook keeps the traceback for the reader
    assert "deliberate failure" in (run / "notebooks" / "02_second.ipynb").read_text()

    (run / "fail").unlink()
    res, msgs = _run(project, run)
    assert [r.status for r in res] == ["skipped", "ran", "ran"]
    assert _log(run) == ["01", "02", "02", "03"]


def test_reproduce_builds_the_book_and_prints_index(project, tmp_path):
    run = tmp_path / "run"
    messages: list[str] = []
    index = rp.reproduce("smoke", run, project=project, echo=messages.append, progress=False)
    assert index == run / "book" / "_build" / "html" / "index.html" and index.is_file()
    assert messages[-1] == str(index.resolve())
    html = (run / "book" / "_build" / "html" / "notebooks" / "03_third.html").read_text()
    assert "third smoke" in html  # the executed output is in the book
    assert "profile smoke" in (run / "book" / "_config.yml").read_text()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["profile"]["name"] == "smoke" and "torch" in prov["versions"]


def test_book_warnings_are_errors(project, tmp_path):
    (project / "book" / "intro.md").write_text("# Intro\n\nA [broken link](missing.md).\n")
    with pytest.raises(InstlibError, match="book did not build"):
        rp.reproduce("smoke", tmp_path / "run", project=project, echo=lambda m: None, progress=False)


def test_the_repository_book_builds_from_the_repository(tmp_path):
    """_config.yml/_toc.yml at the root build the book from the committed (unexecuted) notebooks, -W."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "repo"
    src.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("_build"))
    shutil.copytree(root / "notebooks", src / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    index = rp.build_book(src, echo=lambda m: None)
    assert index.is_file()
    assert (src / "_build" / "html" / "notebooks" / "04_counting.html").is_file()
