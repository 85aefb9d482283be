"""MAE, RMSE and ACP on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from instlib.count.metrics import acp, mae, rmse, score


def test_mae_rmse():
    true, pred = [10, 20, 30, 40], [12, 18, 30, 44]
    assert mae(true, pred) == pytest.approx((2 + 2 + 0 + 4) / 4)
    assert rmse(true, pred) == pytest.approx(math.sqrt((4 + 4 + 0 + 16) / 4))


@pytest.mark.parametrize("true,pred,ok", [
    (100, 105, True),     # exactly 5% over
    (100, 95, True),      # exactly 5% under
    (20, 21, True),
    (60, 63, True),       # 0.05 * 60 is 3.0000000000000004 in floating point
    (7, 7.35, True),
    (100, 105.01, False),
    (100, 94.9, False),
    (300, 285, True),
    (0, 0, True),         # no cells: only an exact 0 is acceptable
    (0, 0.1, False),
])
def test_acp_single(true, pred, ok):
    assert acp([true], [pred]) == (100.0 if ok else 0.0)


def test_acp_percentage_and_score():
    true, pred = [100, 100, 40, 10], [105, 106, 40, 9]
    assert acp(true, pred) == 50.0
    s = score(true, pred)
    assert s["n"] == 4 and s["acp"] == 50.0 and s["mae"] == pytest.approx((5 + 6 + 0 + 1) / 4)


def test_bad_input():
    with pytest.raises(ValueError):
        mae([1, 2], [1])
    with pytest.raises(ValueError):
        acp([], [])
