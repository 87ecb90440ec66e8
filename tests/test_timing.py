"""perforated.timing: alternating rounds."""
import pytest

from perforated.timing import alternating_times


def test_rounds_alternate_after_one_warmup_each():
    order = []
    calls = [lambda: order.append("a"), lambda: order.append("b")]
    times = alternating_times(calls, rounds=3)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert [len(t) for t in times] == [3, 3] and all(x >= 0 for t in times for x in t)
    order.clear()
    alternating_times(calls, rounds=1, warmup=False)
    assert order == ["a", "b"]


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        alternating_times([lambda: None], rounds=0)
