"""``instlib reproduce``: execute the notebooks in order with papermill, then build the book.

For each ``notebooks/NN_name.ipynb``:

1. the parameters it declares (its ``parameters`` cell) are taken from the profile, plus
   ``profile`` and ``run_dir``; a declared parameter the profile does not know is an error;
2. a *stamp* (hash of the notebook's source, its parameters, the package's sources and the
   stamps of the notebooks before it) is compared with the one saved by the last successful run:
   equal stamps skip the notebook (unless ``force``);
3. otherwise papermill executes it into ``RUN/notebooks/NN_name.ipynb``; a failure raises
   :class:`~instlib.errors.InstlibError` naming the notebook, the failing cell and the error, and
   leaves no stamp, so the next run resumes from that notebook. papermill's injected-parameters
   cell (it holds the machine's run folder) is tagged ``remove-cell`` like the parameters cell, so
   the book leaves both out while the executed notebook keeps them.

A notebook run on its own (Colab, Jupyter, papermill) declares its name in its ``notebook_name`` parameter;
its setup runs, through :func:`execute_notebooks`, the notebooks before it that have not finished in
its ``run_dir`` (:func:`run_earlier`), so each one works alone in an empty run folder and picks up
after a disconnect. Without a checkout, as after ``pip install git+URL`` on Colab, the notebooks come
from a clone of the installed commit (:func:`installed_checkout`).

Then the book sources (``_config.yml``, ``_toc.yml``, ``book/``) and the executed notebooks are
copied into ``RUN/book`` (same relative layout as the repository, so the same ``_toc.yml`` serves
both) and built with ``jupyter-book build -W -n --keep-going`` (warnings are errors; notebooks are
not executed again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from instlib.data.atomic import atomic_open, read_json, write_json
from instlib.errors import InstlibError
from instlib.runs import provenance
from instlib.runs.layout import RunLayout
from instlib.runs.profiles import SETTINGS, Profile, get_profile, resolve_models

#: Parameters a notebook may declare besides the profile's fields: the profile's name, the run folder, and
#: the notebook's own name (for :func:`run_earlier` when it runs alone). The first two are required.
RUN_PARAMETERS = ("profile", "run_dir", "notebook_name")
REQUIRED_PARAMETERS = RUN_PARAMETERS[:2]
BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIR = "book"
NOTEBOOK_DIR = "notebooks"
#: Jupyter Book's tag for a cell the rendered page leaves out (the executed notebook keeps it).
REMOVE_CELL = "remove-cell"
INJECTED_TAG = "injected-parameters"
#: The project whose notebooks a kernel started by :func:`execute_notebooks` belongs to (for :func:`run_earlier`).
PROJECT_ENV = "INSTLIB_PROJECT"
#: The kernel's own log (not the notebook's output) at ERROR: its start-up chatter would bury the progress.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


@dataclass(frozen=True)
class NotebookResult:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    path: Path


def project_root(start: Path | None = None) -> Path:
    """The folder with ``notebooks/`` and ``_config.yml``: the project of the driver that started this kernel
    (:data:`PROJECT_ENV`), the current folder or one above it, the checkout the package was installed from
    (editable installs), else a clone of the installed commit (:func:`installed_checkout`)."""
    candidates: list[Path] = []
    if os.environ.get(PROJECT_ENV):  # set by execute_notebooks for its kernels: the project it runs
        candidates.append(Path(os.environ[PROJECT_ENV]))
    here = (start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    candidates.append(provenance.source_root().parent.parent)  # src/instlib -> repository root
    for c in candidates:
        if _is_project(c):
            return c
    checkout = installed_checkout()
    if checkout is not None:
        return checkout
    raise InstlibError("cannot find the project's notebooks/ and _config.yml; run from a clone of the "
                       "repository or pass --project")


def _is_project(folder: Path) -> bool:
    return (folder / NOTEBOOK_DIR).is_dir() and (folder / "_config.yml").is_file()


def _direct_url() -> dict[str, Any] | None:
    """What pip recorded about where it installed the package from (PEP 610 ``direct_url.json``), if anything."""
    from importlib import metadata

    try:
        text = metadata.distribution("instlib").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return json.loads(text) if text else None


def cache_dir() -> Path:
    """Where instlib keeps what it fetched for itself (``$XDG_CACHE_HOME/instlib``, else ``~/.cache/instlib``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instlib"


def installed_checkout() -> Path | None:
    """The project's files for a package installed from git (``pip install git+URL``, as on Colab), which
    brings the library but not the notebooks and book: a clone of that repository at the installed commit,
    made once in :func:`cache_dir`. None when the package was not installed from git."""
    info = _direct_url() or {}
    vcs = info.get("vcs_info", {})
    if vcs.get("vcs") != "git" or not vcs.get("commit_id") or not info.get("url"):
        return None
    dest = cache_dir() / f"project-{vcs['commit_id'][:12]}"
    if _is_project(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        for cmd in (["git", "clone", "--quiet", "--no-checkout", info["url"], str(tmp)],
                    ["git", "-C", str(tmp), "checkout", "--quiet", vcs["commit_id"]]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise InstlibError(f"cannot fetch the project's notebooks from {info['url']}: {' '.join(cmd[:3])} "
                                   f"failed: {proc.stderr.strip() or proc.returncode}")
        tmp.rename(dest)  # in one step: a half-made clone is never taken for the project
    except OSError as exc:
        if not _is_project(dest):  # else another process made the same clone first
            raise InstlibError(f"cannot fetch the project's notebooks from {info['url']}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def list_notebooks(folder: Path) -> list[Path]:
    """``NN_*.ipynb`` in order."""
    nbs = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise InstlibError("holds no notebooks named NN_name.ipynb", folder)
    return nbs


def declared_parameters(notebook: Path) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell (papermill's own parser)."""
    import papermill

    try:
        params = papermill.inspect_notebook(str(notebook))
    except Exception as exc:  # noqa: BLE001 - papermill raises several types for bad notebooks
        raise InstlibError(f"cannot read its parameters: {exc}", notebook) from exc
    if not params:
        raise InstlibError("has no cell tagged 'parameters'", notebook)
    return list(params)


def notebook_parameters(notebook: Path, profile: Profile, run_dir: Path) -> dict[str, Any]:
    """The papermill parameters for ``notebook``: exactly those it declares."""
    names = declared_parameters(notebook)
    valid = set(SETTINGS) | set(RUN_PARAMETERS)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise InstlibError(
            f"declares parameter(s) {', '.join(unknown)} that no profile defines; valid parameters: "
            f"{', '.join(sorted(valid))}", notebook)
    missing = [n for n in REQUIRED_PARAMETERS if n not in names]
    if missing:
        raise InstlibError(f"its parameters cell does not declare {', '.join(missing)} (found: {', '.join(names)}); "
                           "every notebook takes profile and run_dir", notebook)
    base = {"profile": profile.name, "run_dir": str(run_dir), "notebook_name": notebook.stem}
    fields = [n for n in names if n not in RUN_PARAMETERS]
    return {**{n: base[n] for n in names if n in base}, **profile.parameters(fields)}


def _source_digest(notebook: Path) -> str:
    nb = json.loads(notebook.read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", "")), sorted(c.get("metadata", {}).get("tags", [])))
             for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def _data_fingerprint(profile: Profile) -> str:
    """For a user's folder: names, sizes and mtimes of its files (cheap, catches changes)."""
    p = Path(profile.data.real)
    if profile.data.real in ("simulate", "idcia") or not p.is_dir():
        return profile.data.real
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def stamp_for(notebook: Path, params: dict[str, Any], previous: str, source_sha: str, data: str) -> str:
    payload = {"notebook": _source_digest(notebook), "parameters": params, "previous": previous,
               "package": source_sha, "data": data}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def _kernel_env(**env: str) -> Iterator[None]:
    """Environment for the kernels papermill starts (library progress bars off: the book shows outputs)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failure(name: str, exc: Exception, out: Path) -> InstlibError:
    import papermill.exceptions as pe

    if isinstance(exc, pe.PapermillExecutionError):
        src = (exc.source or "").strip().splitlines()
        first = src[0] if src else ""
        where = f"cell {exc.cell_index}" + (f" (execution count {exc.exec_count})" if exc.exec_count else "")
        msg = (f"notebook {name} failed in {where}: {exc.ename}: {exc.evalue}\n"
               f"  cell starts with: {first[:120]}\n"
               f"  full traceback in the executed notebook: {out}\n"
               f"  fix the problem and run the same command again: it resumes from {name}")
    else:
        msg = (f"notebook {name} failed: {type(exc).__name__}: {exc}\n"
               f"  partial output: {out}\n"
               f"  run the same command again to resume from {name}")
    return InstlibError(msg)


def execute_notebooks(profile: Profile, run_dir: str | Path, *, notebooks: list[Path], force: bool = False,
                      echo: Callable[[str], None] = print, progress: bool = True,
                      kernel_name: str = "python3", cwd: Path | None = None) -> list[NotebookResult]:
    """Run ``notebooks`` in order into ``RUN/notebooks``; skip those whose stamp is unchanged."""
    import papermill

    layout = RunLayout(Path(run_dir))
    layout.notebooks.mkdir(parents=True, exist_ok=True)
    layout.stamps.mkdir(parents=True, exist_ok=True)
    source_sha = provenance.source_hash()
    data = _data_fingerprint(profile)
    # Check every notebook's parameters before running anything.
    plans = [(nb, notebook_parameters(nb, profile, layout.root.resolve())) for nb in notebooks]
    results: list[NotebookResult] = []
    previous = ""
    total = len(plans)
    for i, (nb, params) in enumerate(plans, 1):
        name = nb.stem
        out = layout.notebooks / nb.name
        stamp_file = layout.stamps / f"{name}.json"
        stamp = stamp_for(nb, params, previous, source_sha, data)
        saved = (read_json(stamp_file) or {}).get("stamp")
        if not force and saved == stamp and out.is_file():
            echo(f"[{i}/{total}] {name}: unchanged, skipped (use --force to run it again)")
            results.append(NotebookResult(name, "skipped", 0.0, out))
            previous = stamp
            continue
        stamp_file.unlink(missing_ok=True)
        echo(f"[{i}/{total}] {name}: running")
        t0 = time.perf_counter()
        bar: bool | dict = {"desc": f"  {name}", "leave": False} if progress else False
        try:
            with _kernel_env(TQDM_DISABLE="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
                             PYTHONWARNINGS="ignore", **{PROJECT_ENV: str(nb.parent.parent.resolve())}):
                papermill.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel_name,
                                           progress_bar=bar, cwd=str(cwd or nb.parent), log_output=False,
                                           extra_arguments=KERNEL_ARGUMENTS)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            raise _failure(name, exc, out) from exc
        hide_injected_parameters(out)
        dt = time.perf_counter() - t0
        write_json(stamp_file, {"stamp": stamp, "seconds": round(dt, 1), "parameters": params}, sort_keys=False)
        echo(f"[{i}/{total}] {name}: done in {dt:.0f} s")
        results.append(NotebookResult(name, "ran", dt, out))
        previous = stamp
    return results


def finished(layout: RunLayout, notebook: Path) -> bool:
    """Whether ``notebook`` ran to its end in this run folder (its stamp and its executed copy are there)."""
    return (layout.stamps / f"{notebook.stem}.json").is_file() and (layout.notebooks / notebook.name).is_file()


def run_earlier(profile: Profile, run_dir: str | Path, notebook: str, *, project: Path | None = None,
                echo: Callable[[str], None] = print) -> list[NotebookResult]:
    """Run the notebooks before ``notebook`` (its file stem) into ``run_dir`` when one of them has not finished
    there, with :func:`execute_notebooks`: those whose stamp is unchanged are skipped, the others run, and a
    notebook interrupted half-way resumes from the work its stages saved. Nothing runs when all have finished,
    as under ``instlib reproduce``, which runs them in order itself."""
    notebooks = list_notebooks((project or project_root()) / NOTEBOOK_DIR)
    names = [nb.stem for nb in notebooks]
    if notebook not in names:
        raise InstlibError(f"is not one of the project's notebooks ({', '.join(names)}): set the parameter "
                           "notebook_name to this notebook's file name without .ipynb", notebook)
    layout = RunLayout(Path(run_dir))
    earlier = notebooks[:names.index(notebook)]
    if all(finished(layout, nb) for nb in earlier):
        return []
    echo(f"{notebook} needs the results of {', '.join(nb.stem for nb in earlier)} in {layout.root}; running "
         "those that have not finished there first")
    return execute_notebooks(profile, layout.root, notebooks=earlier, echo=echo, cwd=layout.root.resolve())


def hide_injected_parameters(notebook: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` (papermill gives it only its own tag)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags and REMOVE_CELL not in tags:
            cell.metadata["tags"] = [*tags, REMOVE_CELL]
    with atomic_open(notebook, "w") as fh:
        nbformat.write(nb, fh)


def stage_book(project: Path, layout: RunLayout, profile: Profile) -> Path:
    """Copy the book sources and the executed notebooks into ``RUN/book`` (repository layout)."""
    dest = layout.book
    dest.mkdir(parents=True, exist_ok=True)
    for f in BOOK_FILES:
        src = project / f
        if not src.is_file():
            raise InstlibError("is missing; the book cannot be built", src)
        shutil.copy2(src, dest / f)
    if (dest / BOOK_DIR).exists():
        shutil.rmtree(dest / BOOK_DIR)
    shutil.copytree(project / BOOK_DIR, dest / BOOK_DIR, ignore=shutil.ignore_patterns("_build", "*.pyc", "__pycache__"))
    nb_dest = dest / NOTEBOOK_DIR
    nb_dest.mkdir(exist_ok=True)
    for stale in nb_dest.glob("*.ipynb"):
        stale.unlink()
    for nb in sorted(layout.notebooks.glob("*.ipynb")):
        shutil.copy2(nb, nb_dest / nb.name)
    # Say in the title which profile produced this copy of the book.
    cfg_path = dest / "_config.yml"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    cfg["title"] = f"{cfg.get('title', 'InST-Microscopy')} (run: profile {profile.name})"
    cfg.setdefault("execute", {})["execute_notebooks"] = "off"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def build_book(book_dir: Path, *, echo: Callable[[str], None] = print, strict: bool = True) -> Path:
    """``jupyter-book build`` with warnings as errors; returns ``_build/html/index.html``."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book_dir),
           "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    echo(f"building the book in {book_dir} ...")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = book_dir / "_build" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + "\n" + proc.stderr)
    index = book_dir / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.is_file():
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                    if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        shown = "\n  ".join(problems[:15]) or (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InstlibError(f"the book did not build (exit {proc.returncode}):\n  {shown}\n  full log: {log}")
    echo(f"book built in {time.perf_counter() - t0:.0f} s")
    return index


def reproduce(profile: str | Profile = "demo", out: str | Path | None = None, *, force: bool = False,
              overrides: dict[str, Any] | None = None, book: bool = True, project: Path | None = None,
              echo: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run every notebook under ``profile`` into ``out`` and build the book; returns ``index.html``
    (or the run folder when ``book`` is False)."""
    prof = resolve_models(get_profile(profile, **(overrides or {})))
    root = Path(project) if project is not None else project_root()
    layout = RunLayout(Path(out) if out is not None else Path("runs") / prof.name)
    layout.root.mkdir(parents=True, exist_ok=True)
    notebooks = list_notebooks(root / NOTEBOOK_DIR)
    if prof.diffusion_model != get_profile(profile, **(overrides or {})).diffusion_model:
        echo(f"diffusion model 'auto' resolved to {prof.diffusion_model}")
    layout.profile_yaml.write_text(prof.to_yaml())
    write_json(layout.provenance, provenance.collect(prof, {"run_dir": str(layout.root.resolve())}), sort_keys=False)
    echo(f"profile {prof.name} ({prof.budget}); run folder {layout.root}")
    t0 = time.perf_counter()
    execute_notebooks(prof, layout.root, notebooks=notebooks, force=force, echo=echo, progress=progress,
                      cwd=layout.root.resolve())
    if not book:
        echo(f"notebooks done in {time.perf_counter() - t0:.0f} s; executed notebooks in {layout.notebooks}")
        return layout.root
    index = build_book(stage_book(root, layout, prof), echo=echo)
    echo(f"done in {time.perf_counter() - t0:.0f} s. Open the book:")
    echo(str(index.resolve()))
    return index
