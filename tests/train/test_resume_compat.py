"""Checkpoints written before the training loop was split into named parts (dacer2 at commit 96b3263, whose
train() built the payload in a closure) still resume, to exactly the result of a run that was never interrupted.
A long sweep's checkpoints depend on it: they are continued by whatever dacer2 is current.

tests/data/resume_compat was written by that old code with this file's `generate` (small networks, Hopper-v5, a
256-transition buffer saved in the checkpoint; about 160 KB):

    git archive 96b3263 | tar -x -C /tmp/old && cp dacer2/_C*.so /tmp/old/dacer2/
    PYTHONPATH=/tmp/old python tests/test_resume_compat.py tests/data/resume_compat

run_at_200/ is a run stopped after 200 env steps (config.json, metrics.csv, its step-200 checkpoint);
straight_to_300/ holds the metrics and final network weights of the same config run to 300 steps in one go.
"""

import csv
import math
import shutil
import sys
from pathlib import Path

import torch

from dacer2.train.checkpoint import load_checkpoint
from dacer2.train.metrics import CSV_COLUMNS
from dacer2.config import TrainConfig
from dacer2.train.trainer import train

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "resume_compat"
OLD_CHECKPOINT = FIXTURE / "run_at_200" / "checkpoints" / "step_000000000200.pt"
CONFIG = dict(
    env_id="Hopper-v5", learning_starts=100, eval_every=100, eval_episodes=2, log_every=100, actor_hidden=(16, 16),
    critic_hidden=(16, 16), batch_size=32, entropy_states=4, entropy_samples=20, alpha_every=150,
    checkpoint_every=200, progress=False, deterministic=True, save_buffer=True, backend="reference", buffer_size=256,
    device="cpu",
)


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_time", "sps")} for row in csv.DictReader(f)]


def _close(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-4) or a == b
    except ValueError:
        return a == b


def layout(value):
    """The nested key structure of a payload, with the type at each leaf."""
    if isinstance(value, dict):
        return {k: layout(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [layout(v) for v in value]
    return type(value).__name__


def test_an_old_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run_at_200", run)
    # The fixture was computed on 2 threads, and float reductions depend on the thread count; modules that run
    # before this one (test_policy, test_export) set the process to 1 thread at import.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train(TrainConfig(resume=str(run), total_steps=300, progress=False))
    finally:
        torch.set_num_threads(threads)
    assert result.env_steps == 300 and [e[0] for e in result.eval_history] == [0, 100, 200, 300]

    expected = torch.load(FIXTURE / "straight_to_300" / "final_modules.pt", weights_only=True)
    resumed = load_checkpoint(run / "checkpoints" / "final.pt")["agent"]["modules"]
    assert resumed.keys() == expected.keys()
    # Bitwise on the CPU that wrote the fixture; another CPU (AVX-512 here vs AVX2 there) rounds float reductions
    # differently in the last bits (measured: at most 1e-6 on values of order 1), so a few ulps are allowed.
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)
    got, want = metric_rows(run), metric_rows(FIXTURE / "straight_to_300")
    # The resumed file has today's columns: the old ones plus iterations (1 env: iterations = env steps), filled in
    # for the rows the old code wrote too.
    assert [list(row.keys()) for row in got] == [[k for k in CSV_COLUMNS if k not in ("wall_time", "sps")]] * len(got)
    assert all(row["iterations"] == row["env_steps"] for row in got)
    for row, ref in zip(got, want, strict=True):
        for key in ref:
            assert _close(row[key], ref[key]), (key, row[key], ref[key])

    # What the current code writes keeps the old layout, so older readers (and this test) stay valid. The config
    # entry is TrainConfig's own (its fields may grow); only its presence is the payload's business.
    written, old = (load_checkpoint(p) for p in (run / "checkpoints" / "step_000000000300.pt", OLD_CHECKPOINT))
    assert layout({**written, "config": {}}) == layout({**old, "config": {}})


def test_loop_state_reads_and_writes_the_old_loop_entry_whole():
    from dacer2.train.loop_state import LoopState  # here, not above: `generate` runs this file with the old dacer2

    saved = load_checkpoint(OLD_CHECKPOINT)["loop"]
    again = LoopState.from_checkpoint(saved).to_checkpoint()
    assert again.keys() == saved.keys()
    for key, value in saved.items():
        if key == "wall_time":  # the clock keeps running: a rewrite stores the seconds trained by then
            assert again[key] >= value
        elif hasattr(value, "shape"):
            assert again[key].dtype == value.dtype and (again[key] == value).all(), key
        else:
            assert again[key] == value and type(again[key]) is type(value), key


def generate(out: Path) -> None:
    """Write the fixture with the dacer2 on sys.path (see the module docstring for which one)."""
    first, straight = out / "tmp-run_at_200", out / "tmp-straight_to_300"
    train(TrainConfig(**CONFIG, total_steps=200, run_dir=str(first)))
    train(TrainConfig(**CONFIG, total_steps=300, run_dir=str(straight)))
    keep = out / "run_at_200"
    (keep / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "checkpoints/step_000000000200.pt"):
        shutil.copyfile(first / name, keep / name)
    (out / "straight_to_300").mkdir()
    shutil.copyfile(straight / "metrics.csv", out / "straight_to_300" / "metrics.csv")
    modules = load_checkpoint(straight / "checkpoints" / "final.pt")["agent"]["modules"]
    torch.save(dict(modules), out / "straight_to_300" / "final_modules.pt")
    shutil.rmtree(first)
    shutil.rmtree(straight)


if __name__ == "__main__":
    torch.set_num_threads(2)  # as tests/conftest.py does, so the fixture matches what the tests compute
    generate(Path(sys.argv[1]))
