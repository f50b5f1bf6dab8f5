import time

import pytest

from dacer2.train.phase_times import PHASES, PhaseTimes, describe


def test_phases_accumulate_and_the_overhead_is_what_is_not_update(monkeypatch):
    clock = iter([0.0, 1.0, 4.0, 4.5, 5.0, 10.0])  # started, update 1..4, act 4.5..5, breakdown at 10
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    times = PhaseTimes()
    with times.phase("update"):
        pass
    with times.phase("act"):
        pass
    b = times.breakdown()
    assert b["total_s"] == 10.0
    assert b["seconds"]["update"] == 3.0 and b["seconds"]["act"] == 0.5
    assert b["seconds"]["other"] == pytest.approx(6.5)  # the untimed rest
    assert b["loop_overhead"] == pytest.approx(0.7)
    assert set(PHASES) <= set(b["seconds"])
    line = describe(b)
    assert line.startswith("loop overhead 70.0% of 10 s") and "update 30.0%" in line and "env" not in line


def test_a_phase_that_raises_still_counts():
    times = PhaseTimes()
    with pytest.raises(ValueError):
        with times.phase("env"):
            time.sleep(0.01)
            raise ValueError
    assert times.seconds["env"] >= 0.01
