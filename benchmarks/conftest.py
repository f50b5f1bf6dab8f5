"""Benchmarks: every fused figure is reported as a ratio against the eager reference measured in the same
run (the machine is shared, absolute times drift). Run: `pytest benchmarks` (or `make bench`)."""

import pytest

RESULTS: dict[str, dict[str, float]] = {}


@pytest.fixture
def record():
    """record(group, name, benchmark) after benchmark(...) ran: keeps the mean for the ratio summary."""

    def _record(group, name, benchmark):
        RESULTS.setdefault(group, {})[name] = benchmark.stats.stats.mean

    return _record


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("dacer2 fused vs reference (same run)")
    for group, times in RESULTS.items():
        ref = times.get("reference")
        for name, mean in times.items():
            line = f"{group:>28s}  {name:<14s} {mean * 1e6:10.1f} us"
            if ref and name != "reference":
                line += f"   {ref / mean:6.2f}x vs reference"
            terminalreporter.write_line(line)
