"""Settings for the whole test session."""

from __future__ import annotations

import pytest

from instlib.runs import device


@pytest.fixture(scope="session", autouse=True)
def fp32_networks():
    """Networks load in fp32 on every CPU, so results compare bit for bit (batch independence, img2img);
    a CPU with bf16 instructions would load them in bf16 (tests/style/test_whole_image.py tests that path on its own).
    Session-wide and for every test: components built before a test's own fixtures run, and accelerate's
    state (set once per process by the first token training), see the same dtype."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "cpu_has_bf16", lambda: False)
        yield
