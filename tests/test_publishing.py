"""The repository as a published artefact: licence, citation, one repository address, the workflows
that test and publish the book, and command-line help a terminal can show."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import nbformat
import pytest
import typer
import yaml

from instlib.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "schemas" / "cff-1.2.0.schema.json"
CI_COMMAND = "bash .ci/run"  # the README's test command (tests/test_repository.py)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _config() -> dict:
    return _yaml(ROOT / "_config.yml")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- licence and citation


def test_license_is_the_mit_licence_pyproject_declares():
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    assert _config()["author"] in text


def _cff_errors(cff: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(cff)]


def test_citation_cff_validates_against_the_cff_schema():
    cff = _yaml(ROOT / "CITATION.cff")
    assert _cff_errors(cff) == []
    # the check can fail: the same file without authors, or with a malformed DOI, is rejected
    assert _cff_errors({k: v for k, v in cff.items() if k != "authors"})
    broken = json.loads(json.dumps(cff))
    broken["references"][0]["doi"] = "not a doi"
    assert any("doi" in e for e in _cff_errors(broken))


def test_citation_matches_the_package_the_book_and_the_bibliography():
    cff = _yaml(ROOT / "CITATION.cff")
    project = _pyproject()["project"]
    assert cff["version"] == project["version"] and cff["license"] == "MIT"
    assert cff["repository-code"] == _config()["repository"]["url"]
    bib = (ROOT / "book" / "references.bib").read_text()
    paper = cff["references"][0]
    assert f"doi       = {{{paper['doi']}}}" in bib and paper["title"] in bib


@pytest.mark.parametrize("path, heading", [("README.md", "## Cite"), ("book/intro.md", "## How to cite")])
def test_readme_and_intro_say_how_to_cite(path, heading):
    text = (ROOT / path).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    doi = _yaml(ROOT / "CITATION.cff")["references"][0]["doi"]
    assert "CITATION.cff" in section and doi in section and "MIT" in section


# ---------------------------------------------------------------- one repository address


def _repository() -> tuple[str, str]:
    cfg = _config()
    return cfg["repository"]["url"].rstrip("/"), cfg["repository"].get("branch", "main")


def test_config_has_one_repository_address_with_its_buttons():
    url, _ = _repository()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url)
    cfg = _config()
    assert cfg["html"]["use_repository_button"] is True
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["sphinx"]["recursive_update"] is True  # else the theme options below replace Jupyter Book's
    assert cfg["sphinx"]["config"]["html_theme_options"]["use_download_button"] is True


def test_every_mention_of_the_projects_repository_is_the_configured_one():
    url, _ = _repository()
    texts = [ROOT / "README.md", ROOT / "CITATION.cff", ROOT / "pyproject.toml", *NOTEBOOKS,
             *(ROOT / "book").glob("*.md")]
    mentions = {m for path in texts
                for m in re.findall(r"github\.com/[\w.-]+/[\w.-]*inst-microscopy[\w.-]*", path.read_text(), flags=re.I)}
    assert mentions == {url.removeprefix("https://")}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_badge_and_install_cell_come_from_the_configured_repository(notebook):
    url, branch = _repository()
    nb = nbformat.read(notebook, as_version=4)
    badges = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", nb.cells[0].source)
    assert badges == [url.replace("https://github.com/", "https://colab.research.google.com/github/")
                      + f"/blob/{branch}/notebooks/{notebook.name}"]
    installs = re.findall(r"git\+(https://[^\s\"']+)", "".join(c.source for c in nb.cells if c.cell_type == "code"))
    assert installs == [url]


# ---------------------------------------------------------------- reader-facing cells


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_plumbing_cells_are_removed_from_the_book_and_setup_is_one_folded_line(notebook):
    code = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    install, params, setup = code[:3]
    assert "google.colab" in install.source and install.metadata["tags"] == ["remove-cell"]
    assert set(params.metadata["tags"]) == {"parameters", "remove-cell"}
    assert setup.metadata["tags"] == ["hide-input"]
    calls = [ln for ln in setup.source.splitlines() if "setup" in ln and not ln.startswith("from ")]
    assert len(calls) == 1 and calls[0].startswith("P, run = setup_from(globals())"), calls
    code = re.sub(r"\"[^\"]*\"|'[^']*'", '""', setup.source)  # names, not words in strings
    for name in re.findall(r"^(\w+) = ", params.source, flags=re.M):  # no parameter is repeated
        assert not re.search(rf"\b{name}\b", code), name


# ---------------------------------------------------------------- workflows


def _workflow(name: str) -> dict:
    wf = _yaml(ROOT / ".github" / "workflows" / name)
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def _runs(job: dict) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def _uses(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def test_book_workflow_tests_reproduces_the_demo_and_deploys_its_book():
    wf = _workflow("book.yml")
    assert wf["on"]["push"]["branches"] == ["main"] and wf["on"]["schedule"][0]["cron"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    setup_python = _uses(build, "actions/setup-python")
    assert _uses(build, "actions/checkout") and setup_python and setup_python[0]["with"]["cache"] == "pip"
    runs = _runs(build)
    assert CI_COMMAND in runs
    reproduce = [r for r in runs if "instlib reproduce" in r]
    assert len(reproduce) == 1 and "--profile demo" in reproduce[0]
    assert runs.index(CI_COMMAND) < runs.index(reproduce[0])  # publish only what passed the tests
    out = re.search(r"--out (\S+)", reproduce[0]).group(1).strip('"')
    out = out.replace("$RUN", build["env"]["RUN"])
    pages = _uses(build, "actions/upload-pages-artifact")
    assert len(pages) == 1
    assert pages[0]["with"]["path"].replace("${{ env.RUN }}", build["env"]["RUN"]) == f"{out}/book/_build/html"
    assert deploy["needs"] == "build" and _uses(deploy, "actions/deploy-pages")
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"


def test_ci_workflow_runs_the_ci_entry_point_on_pull_requests():
    wf = _workflow("ci.yml")
    assert "pull_request" in wf["on"]
    job = wf["jobs"]["tests"]  # beside it, the floors job (tests/runs/test_floors.py)
    assert CI_COMMAND in _runs(job) and _uses(job, "actions/setup-python")[0]["with"]["cache"] == "pip"


# ---------------------------------------------------------------- the terminal


def _commands(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI (groups and their commands)."""
    out = [path]
    for name, cmd in getattr(command, "commands", {}).items():
        out += _commands(cmd, (*path, name))
    return out


SPHINX_MARKUP = re.compile(r":(class|func|meth|mod|data|attr|doc|ref):`|``")


def test_cli_help_is_plain_words():
    from typer.testing import CliRunner

    runner = CliRunner()
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 10
    for path in commands:
        res = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert res.exit_code == 0, (path, res.output)
        assert not SPHINX_MARKUP.search(res.output), (path, SPHINX_MARKUP.search(res.output).group(0))


def test_setup_from_reads_the_parameters_a_notebook_defined(tmp_path):
    from instlib.runs.notebook import setup, setup_from

    namespace = {"profile": "smoke", "run_dir": str(tmp_path / "run"), "count": {"epochs": "3"}, "cv": None,
                 "sys": object(), "P": "not a parameter"}
    profile, run = setup_from(namespace)
    assert (profile, run) == setup("smoke", tmp_path / "run", count={"epochs": 3}, cv=None)
    assert profile.count.epochs == 3 and profile.cv.seeds == (42,) and run.root == tmp_path / "run"


def test_run_rel_shows_paths_without_the_machine_part(tmp_path, monkeypatch):
    from instlib.runs.layout import RunLayout

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = RunLayout(tmp_path / "run")
    assert run.rel(run.real) == "data/real" and run.rel(run.root) == "."
    assert run.rel(tmp_path / "home" / "data" / "mine") == "~/data/mine"
    assert run.rel("/srv/data") == "/srv/data"


def test_papermills_injected_cell_is_tagged_remove_cell(tmp_path):
    from instlib.runs.reproduce import hide_injected_parameters

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
                                         nbformat.v4.new_code_cell("print(x)")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    for _ in range(2):  # idempotent
        hide_injected_parameters(path)
        tags = [c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells]
        assert tags == [["parameters"], ["injected-parameters", "remove-cell"], []]
