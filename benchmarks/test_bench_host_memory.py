"""Training updates with glibc's default malloc against --keep-freed-memory (dacer2.train.host_memory), in one run
on one host: the update phase of a short HalfCheetah-v5 training (756 env steps, the first 256 uniform-random, then
one update per step: 500 updates, T = 5, batch 256), fused backend, 1 torch thread, as `dacer2-train` runs it.

The setting is process-wide and cannot be undone, so every training is its own interpreter: rounds alternate
default, kept, kept, default, ... and each row takes its setting's quicker round. The update phase comes from the
run's own phase clock (result.json's time_breakdown). `ratio_base` "default malloc" makes the results show the
setting's speed-up. fp32 rows always; bf16 rows where the
CPU multiplies bf16 natively (elsewhere bf16 is emulated and the rows say so). The rest of the suite runs with the
setting on (conftest.py), as training does.

    pytest benchmarks/test_bench_host_memory.py --bench-results benchmarks/results
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dacer2.algo.precision import host_bf16_report
from dacer2.ops import HAS_CPU_KERNELS

pytestmark = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used:pytest_benchmark.logger.PytestBenchmarkWarning")

OBS, ACT, B, THREADS = 17, 6, 256, 1
SETTINGS = ("default malloc", "kept")

# argv: setting, precision, env steps (the first 256 uniform-random, then one update per step). A short HalfCheetah
# training run in this interpreter, as a user starts it; prints the update phase's seconds and the update count.
TRAIN = """
import json, sys, tempfile
from dacer2.config import TrainConfig
from dacer2.train.trainer import train
setting, precision, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tempfile.TemporaryDirectory() as run_dir:
    result = train(TrainConfig(env_id="HalfCheetah-v5", backend="fused", precision=precision, device="cpu", seed=0,
                               total_steps=total, learning_starts=256, eval_episodes=0, eval_every=10**9,
                               log_every=10**9, checkpoint_every=10**9, progress=False, torch_threads=1,
                               keep_freed_memory=setting == "kept", run_dir=run_dir))
print(json.dumps([result.time_breakdown["seconds"]["update"], result.updates]))
"""


def _update_phase(setting: str, precision: str, total: int) -> tuple[float, int]:
    # glibc's own defaults in the "default malloc" rows: no malloc settings inherited from the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", TRAIN, setting, precision, str(total)], capture_output=True, text=True,
                         check=True, env=env)
    seconds, updates = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, updates


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_update(bench, smoke, precision):
    if not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    fast, why = host_bf16_report()
    if precision == "bf16" and not fast and not smoke:
        bench.not_run(f"bf16 rows not run: {why}", op="training update", mode=f"{precision} in train()",
                      backend="kept", S=OBS, A=ACT, threads=THREADS)
    rounds, total = (1, 266) if smoke else (2, 756)
    runs = {setting: [] for setting in SETTINGS}
    for r in range(rounds):
        for setting in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
            runs[setting].append(_update_phase(setting, precision, total))
    for setting in SETTINGS:
        seconds, updates = min(runs[setting])  # the quieter round of each setting
        bench.derived(op="training update", mode=f"{precision} in train()", backend=setting, seconds=seconds,
                      work=updates, work_unit="updates/s", S=OBS, A=ACT, T=5, B=B, threads=THREADS,
                      ratio_base="default malloc", headline=True,
                      note=f"update phase of a {total}-step run; best of {rounds} runs per setting, interleaved")
