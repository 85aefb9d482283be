"""The repository keeps its promises to a new user: the README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = _bash_blocks(quick)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    reproduce, tests = blocks
    assert "instlib reproduce" in reproduce and "pytest" in tests
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


def test_generated_outputs_are_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    for pattern in ("/.venv/", "/data/", "/runs/", "/checkpoints/", "_build/", "*.safetensors"):
        assert pattern in ignored
