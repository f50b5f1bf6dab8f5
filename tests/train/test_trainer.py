import csv
import json

import numpy as np
import pytest
import torch

import dacer2
from dacer2.train.checkpoint import load_checkpoint
from dacer2.envs import EnvError, make_vector_env
from dacer2.train.trainer import step_vector_env, train


def test_truncation_keeps_final_obs_and_is_not_termination():
    envs = make_vector_env("dacer2/MultiGoal-v0", 2, seed=0)
    obs, _ = envs.reset(seed=0)
    start = obs.copy()
    still = np.zeros((2, 2), dtype=np.float32)
    for step in range(100):
        next_obs, reward, terminated, truncated, real_next_obs = step_vector_env(envs, still)
        assert not terminated.any()
        if step < 99:
            assert not truncated.any() and np.array_equal(next_obs, real_next_obs)
    assert truncated.all()
    np.testing.assert_allclose(real_next_obs, start)  # the true last state: the agent never moved
    assert not np.allclose(next_obs, start)  # while next_obs already comes from fresh resets
    envs.close()


def test_termination_is_reported():
    envs = make_vector_env("InvertedPendulum-v5", 1, seed=0)
    envs.reset(seed=0)
    for _ in range(200):
        _, _, terminated, _, real_next_obs = step_vector_env(envs, np.ones((1, 1), dtype=np.float32))
        if terminated.any():
            assert abs(real_next_obs[0, 1]) > 0.2  # the pole angle that ended the episode
            break
    else:
        pytest.fail("pushing the cart one way never toppled the pendulum")
    envs.close()


@pytest.mark.parametrize(
    "env_id, message",
    [("Hoper-v5", "did you mean Hopper-v5"), ("CartPole-v1", "continuous Box action space")],
)
def test_bad_environments_fail_with_one_clear_error(env_id, message):
    with pytest.raises(EnvError, match=message):
        make_vector_env(env_id, 1, seed=0)


def test_train_writes_run_directory(tmp_path, tiny_config):
    result = train(tiny_config(
        env_id="InvertedPendulum-v5", total_steps=300, learning_starts=100, eval_every=150, eval_episodes=2,
        log_every=100, alpha_every=100, run_dir=str(tmp_path / "run"), num_envs=2, updates_per_step=2,
    ))
    run = tmp_path / "run"
    assert result.run_dir == run and result.env_steps == 300
    assert result.updates == 2 * (300 - 100) // 2 + 2  # 2 updates per iteration from step 100 (inclusive) on
    config = json.loads((run / "config.json").read_text())
    assert config["diffusion_steps"] == 5 and config["num_envs"] == 2
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"env_steps", "eval_return_mean", "critic_loss", "alpha", "entropy", "sps"} <= set(header)
    assert len(rows) >= 4
    # Curves of multi-env runs are indexed by iteration (one step of both envs), env steps beside it.
    with open(run / "metrics.csv", newline="") as f:
        steps_and_iterations = [(int(r["env_steps"]), int(r["iterations"])) for r in csv.DictReader(f)]
    assert steps_and_iterations[-1] == (300, 150) and all(s == 2 * i for s, i in steps_and_iterations)
    assert result.iterations == 150 and json.loads((run / "result.json").read_text())["iterations"] == 150
    assert [e[0] for e in result.eval_history] == [0, 150, 300]  # the untrained policy first
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard events"
    state = load_checkpoint(run / "checkpoints" / "final.pt")
    assert state["env_steps"] == 300 and state["agent"]["num_updates"] == result.updates
    # Where the time went: every phase of this run was timed, and the phases add up to the run's loop time.
    saved = json.loads((run / "result.json").read_text())
    times = saved["time_breakdown"]
    assert saved["host"].endswith(f"torch {torch.__version__}") and "cores" in saved["host"]  # what timed it
    assert saved["cuda_graphs"] == "off" and config["cuda_graphs"] == "off"  # auto on a CPU
    assert saved["code"].startswith(f"dacer2 {dacer2.__version__}")  # which code made it (test_provenance.py)
    seconds = times["seconds"]
    assert all(seconds[p] > 0 for p in ("update", "entropy", "act", "env", "replay", "eval", "log", "checkpoint"))
    assert abs(sum(seconds.values()) - times["total_s"]) < 0.01 * times["total_s"] + 1e-3
    assert 0 < times["loop_overhead"] < 1
