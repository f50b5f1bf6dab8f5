"""--vector-env async: the envs step in worker processes while the updates run; the transitions are the sync
envs' own, and checkpoints still capture and restore every env mid-episode (through the workers)."""

import pytest
import torch

from dacer2.config import TrainConfig
from dacer2.train.checkpoint import load_checkpoint
from dacer2.train.trainer import train

TINY = dict(
    env_id="InvertedPendulum-v5", eval_every=100, eval_episodes=1, log_every=100, actor_hidden=(16, 16),
    critic_hidden=(16, 16), batch_size=32, entropy_states=4, entropy_samples=20, alpha_every=150,
    checkpoint_every=200, progress=False, deterministic=True, save_buffer=True, backend="reference", num_envs=3,
    device="cpu",
)


def _final(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "final.pt")


def test_async_workers_produce_the_sync_envs_transitions(tmp_path):
    """Random actions only (the one update comes after the last action): the replay buffers and env snapshots
    match exactly."""
    runs = {}
    for mode in ("sync", "async"):
        train(TrainConfig(**TINY, learning_starts=299, total_steps=300, vector_env=mode, run_dir=str(tmp_path / mode)))
        runs[mode] = _final(tmp_path / mode)
    sync, async_ = runs["sync"], runs["async"]
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(sync["buffer"][name], async_["buffer"][name]), name
    assert sync["buffer"]["terminated"].sum() > 0  # episodes ended and reset inside the run
    assert len(async_["envs"]) == 3 and all(s["exact"] for s in async_["envs"])
    for a, b in zip(sync["envs"], async_["envs"]):
        assert torch.equal(a["mjstate"], b["mjstate"]) and a["elapsed_steps"] == b["elapsed_steps"]


def test_async_run_trains_and_resumes_exactly(tmp_path):
    cfg = dict(TINY, learning_starts=90, vector_env="async")
    straight = train(TrainConfig(**cfg, total_steps=450, run_dir=str(tmp_path / "straight")))
    # the split falls on an evaluation step (every 100, at 102, 201, 300), as the end of a run always evaluates
    train(TrainConfig(**cfg, total_steps=300, run_dir=str(tmp_path / "split")))
    resumed = train(TrainConfig(resume=str(tmp_path / "split"), total_steps=450))
    assert resumed.env_steps == straight.env_steps == 450 and resumed.updates == straight.updates > 100
    a, b = _final(tmp_path / "straight")["agent"]["modules"], _final(tmp_path / "split")["agent"]["modules"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_unknown_vector_env_mode_is_refused():
    from dacer2.envs import make_vector_env

    with pytest.raises(ValueError, match="unknown vector env mode 'threads'"):
        make_vector_env("InvertedPendulum-v5", 2, 0, mode="threads")


def test_ctrl_c_with_async_envs_checkpoints_through_the_workers_and_resumes(tmp_path):
    """Ctrl-C reaches the terminal's whole process group: the workers must outlive it to hand over their envs."""
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "r"
    args = [sys.executable, "-m", "dacer2.cli.train", "--env-id", "InvertedPendulum-v5", "--total-steps", "900",
            "--learning-starts", "90", "--eval-episodes", "1", "--eval-every", "450", "--log-every", "30",
            "--actor-hidden", "16", "--critic-hidden", "16", "--batch-size", "32", "--entropy-states", "4",
            "--entropy-samples", "20", "--no-progress", "--save-buffer", "--num-envs", "3", "--vector-env", "async",
            "--device", "cpu", "--run-dir", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is really training
        if (run / "metrics.csv").exists():
            with open(run / "metrics.csv") as f:
                if any(int(r["env_steps"]) >= 150 for r in csv.DictReader(f)):
                    break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "SIGINT at env step" in err and "--resume" in err, err[-2000:]
    done = subprocess.run([sys.executable, "-m", "dacer2.cli.train", "--resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "after 900 env steps" in done.stdout, done.stderr[-2000:]
