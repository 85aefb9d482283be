"""Every notebook, end to end: ``instlib reproduce --profile smoke`` into a temporary folder, the
executed notebooks checked with nbval, the book built; and the ``paper`` profile's code path run
offline with locally saved tiny models standing in for the hub ids.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def instlib(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instlib.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    run = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    proc = instlib("reproduce", "--profile", "smoke", "--out", str(run))
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, _explain(proc)
    return run, proc, elapsed


def test_committed_notebooks_have_no_outputs_and_a_colab_cell():
    assert len(NOTEBOOKS) == 6
    for stem in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3" and nb["metadata"]["language_info"]["name"]
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), stem
        assert "google.colab" in "".join(code[0]["source"]), stem
        assert f"blob/main/notebooks/{stem}.ipynb" in "".join(nb["cells"][0]["source"]), stem
        assert "parameters" in code[1]["metadata"].get("tags", []), stem
        for c in code:  # every cell is valid IPython (a syntax error would only show up after minutes of work)
            compile(TransformerManager().transform_cell("".join(c["source"])), f"{stem}:{c['id']}", "exec")
        checks = [i for i, c in enumerate(nb["cells"]) if "check" in c["metadata"].get("tags", [])]
        assert len(checks) == 1 and "NBVAL_CHECK_OUTPUT" in "".join(nb["cells"][checks[0]]["source"]), stem
        # nbval's checks and their heading are for Colab users and CI, not for readers of the book
        for c in nb["cells"][checks[0] - 1: checks[0] + 1]:
            assert "remove-cell" in c["metadata"]["tags"], stem


def test_smoke_reproduce_prints_the_index(smoke):
    run, proc, elapsed = smoke
    index = run / "book" / "_build" / "html" / "index.html"
    assert proc.stdout.strip().splitlines()[-1] == str(index.resolve())
    assert index.is_file()
    print(f"instlib reproduce --profile smoke: {elapsed:.0f} s")  # the budget is a benchmark's, not a test's
    assert (run / "profile.yaml").is_file() and json.loads((run / "provenance.json").read_text())["versions"]


def test_executed_notebooks_have_real_outputs_and_no_errors(smoke):
    run, _, _ = smoke
    for stem in NOTEBOOKS:
        nb = json.loads((run / "notebooks" / f"{stem}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], stem
        assert any("checks passed" in "".join(o.get("text", "")) for o in outputs), stem
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"]), stem
        # the random-model / simulated-data banner is on every page
        assert any("admonition warning" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs), stem
    figures = {p.stem for p in (run / "figures").glob("*.png")}
    assert {"01_real_vs_synhc", "01_gradual", "02_loss", "03_real_synhc_inst", "03_strength_sweep", "03_ablation",
            "03_fidelity", "04_metrics", "04_scatter", "05_mixing"} <= figures


def test_the_book_shows_every_chapter_with_its_figures(smoke):
    run, _, _ = smoke
    html = run / "book" / "_build" / "html"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for f in files:
        assert (html / f"{f}.html").is_file(), f
    min_images = {"01_synthesize": 3, "02_style_token": 1, "03_style_transfer": 4, "04_counting": 2,
                  "05_dacs_ablations": 1}
    for stem, n in min_images.items():
        page = (html / "notebooks" / f"{stem}.html").read_text()
        assert len(re.findall(r'<img[^>]+src="[^"]+\.png"', page)) >= n, stem
        assert "admonition warning" in page and "profile <strong>smoke</strong>" in page, stem
        assert "Traceback" not in page, stem
    results = (html / "notebooks" / "06_results.html").read_text()
    assert "25.95" in results and "They do not show" in results and "git commit" in results
    assert (html / "book" / "method.html").read_text().count("math") > 5


def _page_text(page: Path) -> str:
    """What a reader of the page can see or unfold: the HTML without tags, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _removed_and_shown_code(notebook: Path) -> tuple[list[str], set[str]]:
    """Lines of the executed notebook's cells tagged ``remove-cell``, and the lines of the other cells."""
    nb = json.loads(notebook.read_text())
    removed, shown = [], set()
    for c in nb["cells"]:
        lines = [ln.strip() for ln in "".join(c["source"]).splitlines() if ln.strip()]
        if "remove-cell" in c["metadata"].get("tags", []):
            removed += lines
        else:
            shown.update(lines)
    return removed, shown


def test_the_book_shows_no_plumbing_cells_and_no_machine_paths(smoke):
    run, _, _ = smoke
    built = run / "book" / "_build" / "html"
    machine_path = re.compile(r"(?<![\w.~])/(tmp|home|root|Users)/")
    for page in built.rglob("*.html"):
        text = page.read_text()
        assert str(run.resolve()) not in text and str(run) not in text, page
        assert not machine_path.search(_page_text(page)), (page, machine_path.search(_page_text(page)))
    for stem in NOTEBOOKS:
        removed, shown = _removed_and_shown_code(run / "notebooks" / f"{stem}.ipynb")
        # the install, parameters and papermill's injected-parameters cells, in the executed notebook only
        assert any("google.colab" in ln for ln in removed) and any(ln.startswith("run_dir = ") for ln in removed)
        assert sum(ln.startswith("profile = ") for ln in removed) == 2, stem  # declared, then injected
        text = _page_text(built / "notebooks" / f"{stem}.html")
        leaked = [ln for ln in removed if ln not in shown and ln in text]
        assert not leaked, (stem, leaked)
        assert "NBVAL_CHECK_OUTPUT" not in text and "checks passed" not in text, stem
        # the setup cell stays, folded
        page = (built / "notebooks" / f"{stem}.html").read_text()
        assert 'id="checks"' not in page, stem  # nor the checks' heading
        folded = page.split('class="cell tag_hide-input', 1)[1].split("</details>", 1)[0]
        assert "setup_from" in folded and page.count("setup_from") == folded.count("setup_from"), stem


def _parameters_cell(nb: dict) -> str:
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    return "".join(cell["source"])


def test_each_page_offers_its_executed_notebook_and_a_colab_badge_for_the_same_parameters(smoke):
    run, _, _ = smoke
    built = run / "book" / "_build" / "html"
    for stem in NOTEBOOKS:
        page = (built / "notebooks" / f"{stem}.html").read_text()
        assert f'href="../_sources/notebooks/{stem}.ipynb"' in page, stem  # the theme's download button
        downloaded = json.loads((built / "_sources" / "notebooks" / f"{stem}.ipynb").read_text())
        assert downloaded == json.loads((run / "notebooks" / f"{stem}.ipynb").read_text()), stem
        assert any(c.get("outputs") for c in downloaded["cells"] if c["cell_type"] == "code"), stem
        committed = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
        badge = re.search(r"\((https://colab\.research\.google\.com/github/[^)]+)\)",
                          "".join(committed["cells"][0]["source"])).group(1)
        assert badge.endswith(f"/notebooks/{stem}.ipynb") and f'href="{badge}"' in page, stem
        # Colab opens the committed notebook: its parameters cell is the one the executed notebook declares
        assert _parameters_cell(committed) == _parameters_cell(downloaded), stem


def test_executed_notebooks_pass_nbval(smoke, tmp_path):
    run, _, _ = smoke
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "-c", str(ini), "--rootdir", str(run), str(run / "notebooks")],
                          capture_output=True, text=True, timeout=900, cwd=run)
    assert proc.returncode == 0, _explain(proc)
    assert re.search(r"\d+ passed", proc.stdout)


def test_an_unchanged_rerun_skips_every_notebook(smoke):
    run, _, _ = smoke
    proc = instlib("reproduce", "--profile", "smoke", "--out", str(run))
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.count("unchanged, skipped") == len(NOTEBOOKS)


# ---------------------------------------------------------------- the paper profile, offline


def _fake_hub_weights(hf_home: Path, repo: str, state: dict) -> None:
    """Put ``state`` in the Hugging Face cache as ``repo``'s model.safetensors (what timm downloads)."""
    from safetensors.torch import save_file

    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, root / "snapshots" / commit / "model.safetensors")


@pytest.fixture(scope="module")
def paper_inputs(tmp_path_factory):
    """IDCIA as its authors ship it (DAPI and Cy3 images, ImageJ CSVs, the official split lists), tiny local
    stand-ins for Stable Diffusion v1.4 and CLIP ViT-L/14, and ImageNet weights in a local hub cache."""
    import timm

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from idcia_layout import make_idcia

    from instlib.style import load_components, save_components

    root = tmp_path_factory.mktemp("paper")
    images = {f"220812_GFP-AHPC_A_TuJ1_F{i}_{stain}_ND1_20x": (stain, split, "bare")
              for i, (stain, split) in enumerate([("DAPI", "train")] * 10 + [("DAPI", "val")] * 3
                                                 + [("DAPI", "test")] * 3 + [("Cy3", "train")] * 2
                                                 + [("Cy3", "test")] * 2)}
    make_idcia(root / "idcia-shipped", images, shape=(64, 64), cells=(3, 30), seed=5)
    sd = save_components(load_components("tiny", device="cpu"), root / "models" / "sd")
    hf_home = root / "hf"
    _fake_hub_weights(hf_home, timm.models.get_pretrained_cfg("test_efficientnet").hf_hub_id,
                      timm.create_model("test_efficientnet", pretrained=False).state_dict())
    return {"idcia": root / "idcia-shipped", "sd": sd, "hf_home": hf_home}


def test_paper_profile_runs_offline_with_local_models(paper_inputs, tmp_path):
    import pandas as pd

    from instlib.data.fetch import import_folder
    from instlib.style import load_tokens

    # IDCIA as the fetcher leaves it: imported into RUN/data/idcia (the download itself needs internet)
    run = tmp_path / "run"
    import_folder(paper_inputs["idcia"], run / "data" / "idcia", source="idcia", progress=False)
    sd = paper_inputs["sd"]
    sets = {"diffusion_model": str(sd), "image_encoder": str(sd / "image_encoder"),
            "count.model": "test_efficientnet",
            "tokens.steps": "3", "tokens.resolution": "64", "transfer.resolution": "64", "transfer.steps": "4",
            "sweep.strengths": "[0.5, 0.9]", "sweep.shown": "1", "sweep.images": "3", "count.epochs": "1",
            "count.finetune_epochs": "1", "count.crop_size": "32", "cv.mixes": "[none]", "data.gradual_steps": "3",
            "count.split": "official", "device": "cpu"}  # the official split: one fold (the profile's CV has 5)
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = instlib("reproduce", "--profile", "paper", "--out", str(run), "--no-book", *args,
                   env={"HF_HOME": str(paper_inputs["hf_home"]), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, _explain(proc)

    profile = yaml.safe_load((run / "profile.yaml").read_text())
    count = profile["count"]
    assert profile["profile"] == "paper" and profile["data"]["real"] == "idcia" and count["pretrained"] is True
    assert count["recipe"] == "authors" and count["split"] == "official"
    assert profile["tokens"]["reference_clip_input"] is True  # the reference's CLIP input (tests/runs: overridable)
    assert (run / "data" / "real_dir.txt").read_text().startswith(str((run / "data" / "idcia").resolve()))
    # Tokens: DAPI images of the official training part only, with the CLIP input asked for
    tokens = load_tokens(run / "style" / "tokens", "cpu")
    seen = {n for t in tokens for n in t.info["names"]}
    assert seen and all("_DAPI_" in n for n in seen) and not any(f"_F{i}_" in n for n in seen for i in range(13, 16))
    assert {t.reference_clip_input for t in tokens} == {True}
    # Syn-HC: drawn from every stain's points (as the authors); InST: each styled after a DAPI image (the marker
    # images here have no DAPI image of their field: the one of the nearest count), with the local model
    synhc = pd.read_csv(run / "data" / "synhc" / "manifest.csv")
    assert len(synhc) == 20 and synhc["origin"].str.contains("_Cy3_").sum() == 4
    inst = pd.read_csv(run / "data" / "inst" / "manifest.csv")
    assert len(inst) == 20 and set(inst["model"]) == {str(sd)} and inst["style"].str.contains("_DAPI_").all()
    assert (inst.loc[inst["name"].str.contains("_DAPI_"), "style"] == inst.loc[inst["name"].str.contains("_DAPI_"),
                                                                             "name"]).all()
    # Counting: the authors' recipe on the official split; synthetic images drawn from test images left out
    results = pd.read_csv(run / "count" / "cv" / "results.csv")
    deep = results[results["source"] != "classical"]
    assert set(deep["recipe"]) == {"authors"} and set(results["split"]) == {"official"} and set(results["fold"]) == {0}
    assert set(results["n_test"]) == {5}  # 3 DAPI and 2 Cy3 test images
    assert (results.loc[results["source"] == "synhc", "excluded"] == 5).all()  # drawn from the 5 test images
    runs = list((run / "count" / "cv" / "runs").glob("*/run.json"))
    assert runs and all(json.loads(p.read_text())["config"]["pretrained"] for p in runs)
    for stem in NOTEBOOKS:
        assert (run / "notebooks" / f"{stem}.ipynb").is_file()
