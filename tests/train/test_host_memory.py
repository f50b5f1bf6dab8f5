"""--keep-freed-memory: glibc malloc keeps an update's freed blocks, so the next update stops page-faulting them in.

Each measurement runs in its own interpreter: the setting is process-wide and cannot be undone, and the default
allocator is the thing compared against."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dacer2.config import TrainConfig
from dacer2.train import training_run
from dacer2.train.host_memory import glibc, keep_freed_memory
from dacer2.train.trainer import train

needs_glibc = pytest.mark.skipif(glibc() is None, reason="the setting exists only for glibc's malloc (Linux)")

# Minor page faults per update of a HalfCheetah-sized agent (obs 17, action 6, T = 5, B = 256), after warm-up.
FAULTS_PER_UPDATE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from dacer2.train.host_memory import keep_freed_memory
    keep_freed_memory()
from dacer2.algo.agent import Batch, DACER2Agent
from dacer2.config import TrainConfig
torch.set_num_threads(1)
cfg = TrainConfig(env_id="HalfCheetah-v5", backend=sys.argv[2], device="cpu", seed=0, alpha_every=10**9).resolved()
agent = DACER2Agent(17, 6, cfg)
agent.num_updates = 1
g = torch.Generator().manual_seed(0)
batch = Batch(torch.randn(256, 17, generator=g), torch.rand(256, 6, generator=g) * 2 - 1,
              torch.randn(256, generator=g), torch.randn(256, 17, generator=g), torch.zeros(256))
for _ in range(8):  # kept blocks settle within about six updates
    agent.update(batch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
    agent.update(batch)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 16)
"""


def _faults_per_update(mode: str, backend: str) -> float:
    # glibc's own defaults: no malloc settings inherited from the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_UPDATE, mode, backend], capture_output=True, text=True,
                         check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


@needs_glibc
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_kept_memory_stops_updates_faulting_their_working_set_in(backend):
    default, kept = _faults_per_update("default", backend), _faults_per_update("keep", backend)
    # Measured on the development host: the default faults 1,000-5,000 pages in on every policy update, kept memory
    # none after the sixth update but an occasional few hundred.
    assert kept < default / 5, (default, kept)


@needs_glibc
def test_keep_freed_memory_says_what_it_set_and_can_be_repeated():
    first, again = keep_freed_memory(), keep_freed_memory()
    assert first == again and "keeps freed blocks" in first and "32 MiB" in first


def test_runs_record_the_setting_and_the_switch_leaves_malloc_alone(tmp_path, tiny_config, monkeypatch):
    calls = []
    monkeypatch.setattr(training_run, "keep_freed_memory", lambda: calls.append(1) or "kept (stub)")
    short = dict(env_id="InvertedPendulum-v5", total_steps=100, learning_starts=50, eval_every=100, eval_episodes=1)
    train(tiny_config(**short, run_dir=str(tmp_path / "on")))
    assert calls == [1]
    assert json.loads((tmp_path / "on" / "result.json").read_text())["host_memory"] == "kept (stub)"

    train(tiny_config(**short, run_dir=str(tmp_path / "off"), keep_freed_memory=False))
    assert calls == [1]  # not called again
    saved = json.loads((tmp_path / "off" / "result.json").read_text())
    assert saved["host_memory"] == "unchanged (--no-keep-freed-memory)"
    assert json.loads((tmp_path / "off" / "config.json").read_text())["keep_freed_memory"] is False

    # a resume may switch it (it does not touch the algorithm): the "on" run continued with it off
    train(TrainConfig(resume=str(tmp_path / "on"), total_steps=150, keep_freed_memory=False, progress=False))
    assert calls == [1]
    assert json.loads((tmp_path / "on" / "result.json").read_text())["host_memory"].startswith("unchanged")
    assert json.loads((tmp_path / "on" / "config.json").read_text())["keep_freed_memory"] is False
