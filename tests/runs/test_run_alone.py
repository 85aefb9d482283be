"""A notebook on its own: it runs the notebooks before it that its run folder lacks (through the driver),
resumes a half-finished one, finds the project's notebooks without a checkout, and on Colab keeps its run
folder on Google Drive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import papermill
import pytest

from instlib.errors import InstlibError
from instlib.runs import notebook as nbglue
from instlib.runs import provenance
from instlib.runs import reproduce as rp
from instlib.runs.profiles import get_profile
from test_reproduce import LOG, write_notebook  # the driver's toy notebooks (tests/runs/test_reproduce.py)

SMOKE = get_profile("smoke")
ALONE = 'profile = "smoke"\nrun_dir = None\nnotebook_name = "03_alone"\nworkers = None\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Three notebooks that log their runs; the third sets up as the real notebooks do (setup_from)."""
    root = tmp_path / "project"
    nbs = root / "notebooks"
    write_notebook(nbs / "01_first.ipynb", LOG.format(name="01") + 'Path(run_dir, "a.txt").write_text("a")\n')
    write_notebook(nbs / "02_second.ipynb", LOG.format(name="02") + textwrap.dedent("""
        if Path(run_dir, "fail").exists():
            raise ValueError("deliberate failure")
        Path(run_dir, "b.txt").write_text(Path(run_dir, "a.txt").read_text() + "b")
        """))
    write_notebook(nbs / "03_alone.ipynb", textwrap.dedent("""
        from instlib.runs.notebook import setup_from
        P, run = setup_from(globals())
        """) + LOG.format(name="03") + 'print(Path(run_dir, "b.txt").read_text())\n', params=ALONE)
    (root / "_config.yml").write_text("title: toy\n")
    return root


def _log(run: Path) -> list[str]:
    p = run / "log.txt"
    return p.read_text().split() if p.exists() else []


def _earlier(project: Path, run: Path, name: str = "03_alone") -> list[rp.NotebookResult]:
    return rp.run_earlier(SMOKE, run, name, project=project, echo=lambda m: None)


def test_the_notebooks_before_run_once_and_a_half_finished_one_resumes(project, tmp_path):
    run = tmp_path / "run"
    assert [r.status for r in _earlier(project, run)] == ["ran", "ran"] and _log(run) == ["01", "02"]
    assert _earlier(project, run) == [] and _log(run) == ["01", "02"]  # all finished: nothing runs
    # 02 interrupted (no stamp): 01 is skipped, 02 runs again
    (run / ".stamps" / "02_second.json").unlink()
    assert [r.status for r in _earlier(project, run)] == ["skipped", "ran"] and _log(run) == ["01", "02", "02"]
    assert _earlier(project, run, "01_first") == []  # nothing comes before the first
    with pytest.raises(InstlibError, match="04_missing.*not one of the project's notebooks.*01_first, 02_second"):
        _earlier(project, run, "04_missing")


def test_a_failure_before_stops_the_notebook_and_the_next_try_resumes(project, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "fail").touch()
    with pytest.raises(InstlibError, match="02_second failed.*deliberate failure"):
        _earlier(project, run)
    (run / "fail").unlink()
    assert [r.status for r in _earlier(project, run)] == ["skipped", "ran"] and _log(run) == ["01", "02", "02"]


def test_a_notebook_run_alone_by_papermill_runs_the_ones_before_it_first(project, tmp_path):
    run = tmp_path / "empty-run"
    out = tmp_path / "03_alone.ipynb"
    papermill.execute_notebook(str(project / "notebooks" / "03_alone.ipynb"), str(out), kernel_name="python3",
                               parameters={"run_dir": str(run)}, cwd=str(project), progress_bar=False)
    assert _log(run) == ["01", "02", "03"] and "ab" in out.read_text()
    # as the driver runs it: the notebooks before are stamped, so nothing runs twice
    assert rp.notebook_parameters(project / "notebooks" / "03_alone.ipynb", SMOKE, run)["notebook_name"] == "03_alone"
    papermill.execute_notebook(str(project / "notebooks" / "03_alone.ipynb"), str(out), kernel_name="python3",
                               parameters={"run_dir": str(run)}, cwd=str(project), progress_bar=False)
    assert _log(run) == ["01", "02", "03", "03"]


# ---------------------------------------------------------------- the notebooks without a checkout


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def installed_from_git(project, tmp_path, monkeypatch) -> tuple[Path, str]:
    """The package as ``pip install git+URL`` leaves it: no checkout beside the sources, a PEP 610 record."""
    _git("init", "-q", cwd=project)
    _git("add", ".", cwd=project)
    _git("commit", "-qm", "toy", cwd=project)
    commit = _git("rev-parse", "HEAD", cwd=project)
    (project / "notebooks" / "04_later.ipynb").write_text("{}")  # committed later: not in the installed commit
    _git("add", ".", cwd=project)
    _git("commit", "-qm", "later", cwd=project)
    record = {"url": project.as_uri(), "vcs_info": {"vcs": "git", "commit_id": commit}}
    monkeypatch.setattr(rp, "_direct_url", lambda: record)
    monkeypatch.setattr(provenance, "source_root", lambda: tmp_path / "site-packages" / "instlib")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return project, commit


def test_without_a_checkout_the_notebooks_come_from_a_clone_of_the_installed_commit(installed_from_git, tmp_path):
    origin, commit = installed_from_git
    root = rp.project_root()
    assert root == tmp_path / "cache" / "instlib" / f"project-{commit[:12]}"
    assert [p.name for p in rp.list_notebooks(root / "notebooks")] == ["01_first.ipynb", "02_second.ipynb",
                                                                       "03_alone.ipynb"]
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no half-made clone left behind
    subprocess.run(["rm", "-rf", str(origin / ".git")], check=True)  # the clone is reused, not made again
    assert rp.project_root() == root


def test_a_clone_that_fails_says_why_and_leaves_nothing(installed_from_git, tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "_direct_url", lambda: {"url": (tmp_path / "nowhere").as_uri(),
                                                    "vcs_info": {"vcs": "git", "commit_id": "0" * 40}})
    with pytest.raises(InstlibError, match="cannot fetch the project's notebooks from file://.*nowhere: git clone"):
        rp.project_root()
    assert not list((tmp_path / "cache" / "instlib").iterdir())
    monkeypatch.setattr(rp, "_direct_url", lambda: {"url": "file:///wheel.whl", "archive_info": {}})
    with pytest.raises(InstlibError, match="cannot find the project's notebooks"):
        rp.project_root()


# ---------------------------------------------------------------- Colab


@pytest.fixture
def colab(tmp_path, monkeypatch) -> list[str]:
    """A Colab kernel: ``google.colab`` imported, Drive mounted (once) under ``tmp_path/drive``."""
    mounts: list[str] = []

    def mount(path: str) -> None:
        mounts.append(path)
        (Path(path) / "MyDrive").mkdir(parents=True)

    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(nbglue, "COLAB_DRIVE", tmp_path / "drive")
    return mounts


def test_on_colab_the_run_folder_is_on_google_drive(colab, tmp_path):
    profile, run = nbglue.setup("smoke")
    assert run.root == tmp_path / "drive" / "MyDrive" / "inst-microscopy" / "runs" / "smoke" and run.root.is_dir()
    assert colab == [str(tmp_path / "drive")]
    nbglue.setup("smoke", tmp_path / "drive" / "MyDrive" / "elsewhere")
    assert colab == [str(tmp_path / "drive")]  # mounted once per VM
    nbglue.setup("smoke", tmp_path / "local")  # a run folder off Drive needs no Drive


def test_off_colab_the_run_folder_stays_local(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    assert nbglue.setup("smoke")[1].root == Path("runs") / "smoke" and (tmp_path / "runs" / "smoke").is_dir()


def test_the_driver_tells_its_kernels_which_project_they_belong_to(project, tmp_path):
    """So a notebook the driver runs finds the notebooks before it in the driver's project (here not the one
    beside the package's sources, which the kernel would find otherwise)."""
    write_notebook(project / "notebooks" / "01_first.ipynb", 'from pathlib import Path\n'
                   'from instlib.runs.reproduce import project_root\n'
                   'Path(run_dir, "root.txt").write_text(str(project_root()))\n')
    run = tmp_path / "run"
    rp.execute_notebooks(SMOKE, run, notebooks=[project / "notebooks" / "01_first.ipynb"], echo=lambda m: None,
                         progress=False, cwd=tmp_path)
    assert (run / "root.txt").read_text() == str(project.resolve())
