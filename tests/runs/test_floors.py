"""The dependency floors: pyproject.toml's, the pins of .ci/floors.txt, and the CI job that tests them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ROOT / ".ci" / "floors.txt"
UNPINNED = {"torch", "torchvision"}  # the floors job takes the build pip resolves (.ci/floors.txt says why)


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    """``2.0`` and ``2.0.0`` alike: the numbers without trailing zeros."""
    parts = [int(x) for x in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declared_floors() -> dict[str, tuple[int, ...]]:
    """Package -> floor of every dependency in pyproject.toml (each has exactly one ``>=`` floor)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", dep)
        assert m, f"{dep!r} is not NAME>=FLOOR"
        floors[_name(m.group(1))] = _release(m.group(2))
    return floors


def pinned_floors() -> dict[str, tuple[int, ...]]:
    pins = {}
    for line in FLOORS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not NAME==VERSION"
            pins[_name(name)] = _release(version)
    return pins


def test_the_floor_pins_are_pyprojects_floors():
    declared = declared_floors()
    assert {"transformers", "diffusers", "timm", "accelerate", "pydantic", "scipy", "pandas"} <= set(declared)
    assert pinned_floors() == {k: v for k, v in declared.items() if k not in UNPINNED}
    # the floors the APIs in use demand
    assert declared["transformers"] >= (4, 56)  # from_pretrained(dtype=)
    assert declared["pydantic"] >= (2, 7)  # use_attribute_docstrings
    assert declared["diffusers"] >= (0, 35)  # diffusers.models.attention.AttentionMixin
    assert declared["timm"] >= (1, 0, 10)  # test_efficientnet, test_resnet


def test_ci_runs_the_fast_tests_on_the_floor_versions():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [s["run"] for s in wf["jobs"]["floors"]["steps"] if "run" in s]
    install = [s for s in steps if "pip install" in s]
    assert len(install) == 1 and "-c .ci/floors.txt" in install[0] and '".[test]"' in install[0]
    tests = [s for s in steps if "pytest" in s]
    assert len(tests) == 1 and '-m "not slow"' in tests[0]
    for path in re.findall(r"\btests/\S+", tests[0]):  # every test path of the job exists
        assert (ROOT / path).exists(), path
