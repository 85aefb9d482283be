"""User errors through the real entry point: one ``error: ...`` line on stderr, exit code 2, no traceback.

Covers bad arguments of every command (found by walking the typer app, so a new command must add
an entry here), and failures while writing: disk full, permission denied, read-only file system,
an output path that is a file. After a failure no temporary file is left, earlier outputs are
intact, and a rerun completes with the files of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

import instlib
from instlib.config import SynHCConfig
from instlib.cli import app
from instlib.data.atomic import is_temporary
from instlib.data.simulate import simulate
from instlib.data.synth import synthesize_random

from data.cli_runner import run_cli


def commands(group=None, path=()) -> dict[tuple[str, ...], object]:
    """Every leaf command of the app, by its words on the command line."""
    group = group or typer.main.get_command(app)
    found = {}
    for name, cmd in getattr(group, "commands", {}).items():
        found |= commands(cmd, (*path, name)) if hasattr(cmd, "commands") else {(*path, name): cmd}
    return found


# One invalid value per command; {real} is a valid real folder, {tmp} an empty scratch folder.
INVALID = {
    ("data", "check"): ["{tmp}/missing"],
    ("data", "fetch"): ["no-such-dataset", "--dest", "{tmp}/d"],
    ("data", "import"): ["{real}", "--dest", "{tmp}/d", "--format", "bogus"],
    ("synth",): ["--out", "{tmp}/o", "--n", "3", "--size", "40", "50", "--cells", "9", "5"],
    ("simulate",): ["--out", "{tmp}/o", "--n", "2", "--size", "40", "50", "--cells", "1", "5", "--color", "purple"],
    ("style", "train"): ["--style", "{real}", "--out", "{tmp}/t.safetensors", "--steps", "0", "--model", "tiny"],
    ("style", "transfer"): ["--content", "{real}", "--style", "{real}", "--token", "{tmp}/t.safetensors",
                            "--out", "{tmp}/o", "--model", "tiny", "--strength", "1.5"],
    ("style", "prior"): ["--real", "{real}", "--out", "{tmp}/p", "--resolution", "12"],
    ("style", "realism"): ["--real", "{real}", "--fake", "{tmp}/missing", "--out", "{tmp}/r.csv"],
    ("style", "filter"): ["{real}", "--out", "{tmp}/o", "--min-fidelity", "0.5"],
    ("style", "fidelity"): ["{tmp}/missing"],
    ("count", "train"): ["--train", "{real}", "--test", "{real}", "--out", "{tmp}/o", "--epochs", "0"],
    ("count", "predict"): ["--model", "{tmp}/missing", "--data", "{real}", "--out", "{tmp}/p.csv"],
    ("count", "cv"): ["--real", "{real}", "--out", "{tmp}/o", "--folds", "1", "--no-pretrained"],
    ("count", "classical"): ["--train", "{real}", "--test", "{tmp}/missing"],
    ("count", "compare"): ["{real}"],
    ("reproduce",): ["--profile", "no-such-profile"],
}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("real") / "real", 6, (48, 48), (1, 6), seed=3, progress=False)


def assert_one_error_line(code: int, err: str, prefix: str = "error: ") -> None:
    """Exit 2 and one ``error:`` line, the last on stderr (progress bars may come before it)."""
    assert code == 2, err
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", err)  # tqdm moves the cursor with ANSI escapes
    last = plain.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith(prefix), err
    assert err.count("error: ") == 1 and "Traceback" not in err, err


def test_every_command_has_an_invalid_value_case():
    assert set(INVALID) == set(commands()), "add one invalid value for each new command to INVALID"


@pytest.mark.parametrize("words", sorted(INVALID), ids=" ".join)
def test_invalid_value_is_a_user_error(capsys, tmp_path: Path, real: Path, words):
    args = [a.format(real=real, tmp=tmp_path) for a in INVALID[words]]
    code, _, err = run_cli(capsys, *words, *args)
    assert_one_error_line(code, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("words", sorted(commands()), ids=" ".join)
def test_unknown_option_is_a_user_error(capsys, words):
    code, _, err = run_cli(capsys, *words, "--no-such-option", "1")
    assert_one_error_line(code, err)
    assert "--no-such-option" in err and f"instlib {' '.join(words)} --help" in err


def test_non_numeric_value_names_the_option(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "synth", "--out", tmp_path / "o", "--n", "three", "--size", "40", "50",
                           "--cells", "1", "5")
    assert_one_error_line(code, err, "error: Invalid value for '--n'")



def test_sigma_is_a_number_or_auto(capsys, tmp_path: Path, real: Path):
    code, _, err = run_cli(capsys, "count", "train", "--train", real, "--test", real, "--out", tmp_path / "o",
                           "--sigma", "wide")
    assert_one_error_line(code, err, "error: Invalid value for '--sigma': sigma must be a number of pixels > 0 or 'auto'")
    assert "got 'wide'" in err and not (tmp_path / "o").exists()

# ---------------------------------------------------------------- failures while writing

SYNTH = ["synth", "--n", "12", "--size", "64", "64", "--cells", "3", "9", "--seed", "5"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    """The files of SYNTH run once without trouble."""
    out = tmp_path_factory.mktemp("ref") / "synth"
    synthesize_random(out, 12, (64, 64), (3, 9), SynHCConfig(seed=5), progress=False)
    return files_of(out)


def fail_after(monkeypatch, n_ok: int, error: OSError) -> None:
    """Let ``n_ok`` PNG writes succeed, then raise ``error`` from the file object, as a full disk does."""
    import PIL.Image

    real_save, calls = PIL.Image.Image.save, {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_ok:
            with open(fp, "wb") as fh:  # a partial file, as a write cut short leaves it
                fh.write(b"\x89PNG\r\n")
            raise error
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", save)


@pytest.mark.parametrize("error, problem", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device; free some space"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
], ids=["disk-full", "permission-denied", "read-only"])
def test_write_failure_mid_run_then_rerun(capsys, monkeypatch, tmp_path: Path, uninterrupted, error, problem):
    out = tmp_path / "synth"
    with monkeypatch.context() as m:
        fail_after(m, 5, error)
        code, _, err = run_cli(capsys, *SYNTH, "--out", out)
    assert_one_error_line(code, err, f"error: {out}/images/synhc_00005.png: cannot be written: {problem}")
    assert not temporaries(out)
    written = files_of(out)
    assert {k for k in written if k.startswith("images/")} == {f"images/synhc_{i:05d}.png" for i in range(5)}
    assert all(written[k] == uninterrupted[k] for k in written if k.startswith(("images/", "points/")))

    code, _, err = run_cli(capsys, *SYNTH, "--out", out)
    assert code == 0, err
    assert files_of(out) == uninterrupted


@contextlib.contextmanager
def unwritable(folder: Path):
    """A folder nobody may write to: mode 555, or for root (whom modes do not stop) the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", folder], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", folder], check=True)  # noqa: E731
    else:
        pytest.skip("running as root on a file system without chattr: no way to make a folder unwritable")
    try:
        yield
    finally:
        undo()


def test_permission_denied_on_a_real_folder(capsys, tmp_path: Path, uninterrupted):
    out = tmp_path / "synth"
    assert run_cli(capsys, *SYNTH, "--out", out)[0] == 0
    with unwritable(out / "images"):
        code, _, err = run_cli(capsys, *SYNTH, "--out", out)
    assert_one_error_line(code, err, f"error: {out / 'images'}: ")
    assert "permission denied" in err.lower() or "operation not permitted" in err.lower()
    assert files_of(out) == uninterrupted


def test_output_path_is_a_file(capsys, tmp_path: Path, real: Path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me\n")
    code, _, err = run_cli(capsys, *SYNTH, "--out", blocker)
    assert_one_error_line(code, err, f"error: {blocker}: ")
    code, _, err = run_cli(capsys, "style", "fidelity", real, "--csv", tmp_path / "taken" / "table.csv")
    assert_one_error_line(code, err, f"error: {blocker}: ")
    code, _, err = run_cli(capsys, "style", "fidelity", real, "--csv", tmp_path)
    assert_one_error_line(code, err, f"error: {tmp_path}: cannot be written")
    assert blocker.read_text() == "keep me\n" and not temporaries(tmp_path)


# The child dies by SIGKILL in the middle of writing its 6th image, inside the atomic writer.
KILLED_SYNTH = """
import os, signal, sys
import PIL.Image

save, done = PIL.Image.Image.save, [0]

def dying_save(self, fp, *a, **k):
    done[0] += 1
    if done[0] == 6:
        with open(fp, "wb") as fh:
            fh.write(b"\\x89PNG\\r\\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, fp, *a, **k)

PIL.Image.Image.save = dying_save
from instlib.cli import main

sys.argv = ["instlib", *sys.argv[1:]]
main()
"""


def test_kill_9_during_synth_then_rerun_sweeps_its_temporaries(capsys, tmp_path: Path, uninterrupted):
    out = tmp_path / "synth"
    env = {**os.environ, "PYTHONPATH": str(Path(instlib.__file__).parents[1])}
    res = subprocess.run([sys.executable, "-c", KILLED_SYNTH, *SYNTH, "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr
    stale = temporaries(out)
    assert [p.name.split(".")[1] for p in stale] == ["synhc_00005"]
    user_files = [out / "images" / ".notes.txt", out / "images" / ".synhc_00003.png.keep"]  # not the writer's
    for f in user_files:
        f.write_text("mine\n")

    code, _, err = run_cli(capsys, *SYNTH, "--out", out)
    assert code == 0, err
    assert not temporaries(out) and all(f.read_text() == "mine\n" for f in user_files)
    for f in user_files:
        f.unlink()
    assert files_of(out) == uninterrupted


# ---------------------------------------------------------------- real file systems (root only)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 256 KiB tmpfs, or a skip saying why the machine allows none."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no 'mount' command on this machine")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


def test_disk_full_on_a_real_tmpfs_then_rerun_after_freeing_space(capsys, tmpfs: Path, uninterrupted):
    filler = tmpfs / "filler.bin"
    filler.write_bytes(np.zeros(256 * 1024 - 40 * 1024, np.uint8).tobytes())  # leave ~40 KiB
    out = tmpfs / "synth"
    code, _, err = run_cli(capsys, *SYNTH, "--out", out)
    assert_one_error_line(code, err, f"error: {out}")
    assert "No space left on device" in err
    assert not temporaries(tmpfs)
    filler.unlink()  # free the space; the same command now completes
    assert run_cli(capsys, *SYNTH, "--out", out)[0] == 0
    assert files_of(out) == uninterrupted


def test_read_only_file_system(capsys, tmpfs: Path, uninterrupted):
    out = tmpfs / "synth"
    assert run_cli(capsys, *SYNTH, "--out", out)[0] == 0
    before = files_of(out)
    remount(tmpfs, "ro")
    code, _, err = run_cli(capsys, *SYNTH, "--out", tmpfs / "other")
    assert_one_error_line(code, err, f"error: {tmpfs / 'other'}")
    assert "Read-only file system" in err
    code, _, err = run_cli(capsys, *SYNTH, "--out", out, "--seed", "6", "--overwrite")
    assert_one_error_line(code, err, f"error: {out}")
    assert files_of(out) == before == uninterrupted
