"""Checkpoints, exact resume, interruption and bad input (issue: reliability)."""

import csv
import json
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dacer2.train.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from dacer2.config import TrainConfig
from dacer2.train.trainer import NonFiniteError, train

TINY = dict(
    env_id="InvertedPendulum-v5", learning_starts=100, eval_every=100, eval_episodes=2, log_every=100,
    actor_hidden=(16, 16), critic_hidden=(16, 16), batch_size=32, entropy_states=4, entropy_samples=20,
    alpha_every=150, checkpoint_every=200, progress=False, deterministic=True, save_buffer=True, backend="reference",
)


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_time", "sps")} for row in csv.DictReader(f)]


def final_params(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "final.pt")["agent"]["modules"]


# Both backends: "fused" (C++ kernels on CPU) is the default, so its reproducibility matters most.
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, backend):
    cfg = {**TINY, "backend": backend}
    straight = train(TrainConfig(**cfg, total_steps=400, run_dir=str(tmp_path / "straight")))
    train(TrainConfig(**cfg, total_steps=200, run_dir=str(tmp_path / "split")))
    resumed = train(TrainConfig(resume=str(tmp_path / "split"), total_steps=400))
    assert resumed.env_steps == straight.env_steps == 400 and resumed.updates == straight.updates
    a, b = final_params(tmp_path / "straight"), final_params(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metric_rows(tmp_path / "straight") == metric_rows(tmp_path / "split")  # logs appended, not restarted
    assert json.loads((tmp_path / "split" / "config.json").read_text())["total_steps"] == 400


def test_resume_after_a_crash_drops_the_log_rows_written_after_the_checkpoint(tmp_path):
    train(TrainConfig(**TINY, total_steps=400, run_dir=str(tmp_path / "r")))
    uninterrupted = metric_rows(tmp_path / "r")
    # As if killed just before the step-400 checkpoint: rows for steps 300-400 exist, the newest checkpoint is 200.
    (tmp_path / "r" / "checkpoints" / "step_000000000400.pt").unlink()
    train(TrainConfig(resume=str(tmp_path / "r"), total_steps=400))
    assert metric_rows(tmp_path / "r") == uninterrupted
    events = EventAccumulator(str(tmp_path / "r"))
    events.Reload()  # TensorBoard's own reader, which applies the resumed writer's purge of steps 300 and 400
    assert [e.step for e in events.Scalars("eval/eval_return_mean")] == [0, 100, 200, 300, 400]


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_same_seed_same_metrics(tmp_path, backend):
    cfg = {**TINY, "backend": backend}
    first = train(TrainConfig(**cfg, total_steps=200, run_dir=str(tmp_path / "a")))
    second = train(TrainConfig(**cfg, total_steps=200, run_dir=str(tmp_path / "b")))
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
    assert first.eval_history == second.eval_history
    train(TrainConfig(**{**cfg, "seed": 1}, total_steps=200, run_dir=str(tmp_path / "c")))
    assert metric_rows(tmp_path / "c") != metric_rows(tmp_path / "a")


def test_checkpoints_rotate_and_a_corrupt_newest_falls_back(tmp_path, capsys):
    train(TrainConfig(**{**TINY, "checkpoint_every": 100, "keep_checkpoints": 2}, total_steps=400, run_dir=str(tmp_path / "r")))
    manager = CheckpointManager(tmp_path / "r" / "checkpoints")
    assert [p.name for p in manager.saved()] == ["step_000000000300.pt", "step_000000000400.pt"]
    newest = manager.saved()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash mid-copy
    with pytest.raises(CheckpointError, match="not a readable dacer2 checkpoint"):
        load_checkpoint(newest)
    path, payload = manager.load_latest()
    assert path.name == "step_000000000300.pt" and payload["loop"]["env_steps"] == 300
    # ...and says so: a resume going back further than the newest checkpoint is news to the user.
    assert "skipped a checkpoint that does not load" in capsys.readouterr().err


def test_a_directory_that_holds_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    run = tmp_path / "r"
    train(TrainConfig(**TINY, total_steps=200, run_dir=str(run)))
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ValueError, match=f"already holds a run .*--resume {run}.*fresh --run-dir"):
        train(TrainConfig(**TINY, total_steps=300, seed=1, run_dir=str(run)))
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing touched
    (run / "notes.txt").write_text("mine")
    train(TrainConfig(**TINY, total_steps=300, seed=1, run_dir=str(run), overwrite=True))
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one run's events, not two
    with open(run / "metrics.csv") as f:
        steps = [int(r["env_steps"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] == 300 and steps.count(0) == 1  # one run's rows
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_a_run_that_fails_to_build_leaves_no_directory(tmp_path):
    with pytest.raises(ValueError):
        train(TrainConfig(**{**TINY, "device": "tpu"}, total_steps=150, run_dir=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


def test_resume_refuses_options_it_would_ignore(tmp_path):
    train(TrainConfig(**TINY, total_steps=200, run_dir=str(tmp_path / "r")))
    with pytest.raises(ValueError, match="--eta would be ignored; a resume can change only --total-steps"):
        train(TrainConfig(resume=str(tmp_path / "r"), total_steps=300, eta=0.5))
    with pytest.raises(ValueError, match="--seed, --batch-size would be ignored"):
        train(TrainConfig(resume=str(tmp_path / "r"), total_steps=300, seed=4, batch_size=8))


def test_resume_without_a_saved_buffer_says_it_refills(tmp_path, capsys):
    train(TrainConfig(**{**TINY, "save_buffer": False}, total_steps=200, run_dir=str(tmp_path / "r")))
    capsys.readouterr()
    train(TrainConfig(resume=str(tmp_path / "r"), total_steps=300, progress=False))
    assert "holds no replay buffer" in capsys.readouterr().err


def test_config_json_names_the_device_and_backend_that_ran(tmp_path):
    train(TrainConfig(**{**TINY, "backend": "auto", "device": "auto"}, total_steps=150, run_dir=str(tmp_path / "r")))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["device"] == "cpu" and config["backend"] in ("fused", "reference")
    # A run recorded on a GPU continues on this CPU: --device auto (the default) picks what the machine has.
    (tmp_path / "r" / "config.json").write_text(json.dumps({**config, "device": "cuda"}))
    assert train(TrainConfig(resume=str(tmp_path / "r"), total_steps=200, progress=False)).env_steps == 200
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "cpu"


def test_resume_rejects_a_checkpoint_of_another_task(tmp_path):
    train(TrainConfig(**TINY, total_steps=200, run_dir=str(tmp_path / "r")))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    config["env_id"] = "dacer2/MultiGoal-v0"
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not belong to this run"):
        train(TrainConfig(resume=str(tmp_path / "r"), total_steps=400))
    with pytest.raises(CheckpointError, match="no config.json"):
        train(TrainConfig(resume=str(tmp_path / "nowhere")))


class NaNAfterSteps(gym.Env):
    """Returns a NaN observation on its 30th step."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(3, np.nan if self.t == 30 else 0.1, np.float32)
        return obs, 1.0, False, False, {}


def test_non_finite_observation_stops_with_a_checkpoint(tmp_path):
    if "test/NaNAfterSteps-v0" not in gym.registry:
        gym.register("test/NaNAfterSteps-v0", entry_point=NaNAfterSteps, max_episode_steps=1000)
    cfg = TrainConfig(**{**TINY, "env_id": "test/NaNAfterSteps-v0", "eval_episodes": 0}, total_steps=150, run_dir=str(tmp_path / "r"))
    with pytest.raises(NonFiniteError, match="non-finite observation or reward at env step 30"):
        train(cfg)
    payload = CheckpointManager(tmp_path / "r" / "checkpoints").load_latest()[1]
    assert payload["loop"]["env_steps"] == 29 and np.isfinite(payload["loop"]["obs"]).all()


def test_unwritable_run_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot write the run directory"):
        train(TrainConfig(**TINY, total_steps=150, run_dir=str(blocker / "run")))


def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    run = tmp_path / "r"
    args = [sys.executable, "-m", "dacer2.cli.train", "--env-id", "InvertedPendulum-v5", "--total-steps", "1000",
            "--learning-starts", "100", "--eval-episodes", "1", "--eval-every", "500", "--log-every", "50",
            "--actor-hidden", "16", "--critic-hidden", "16", "--batch-size", "32", "--entropy-states", "4",
            "--entropy-samples", "20", "--no-progress", "--save-buffer", "--run-dir", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is really training (updates start at step 100)
        if (run / "metrics.csv").exists() and any(int(r["env_steps"]) >= 150 for r in metric_rows(run)):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at env step" in err and "--resume" in err
    stopped_at = CheckpointManager(run / "checkpoints").load_latest()[1]["loop"]["env_steps"]
    assert 150 <= stopped_at < 1000
    done = subprocess.run([sys.executable, "-m", "dacer2.cli.train", "--resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resumed {run} from step_{stopped_at:012d}.pt" in done.stderr
    assert "after 1000 env steps" in done.stdout
    steps = [int(r["env_steps"]) for r in metric_rows(run)]
    assert steps == sorted(steps) and steps[-1] == 1000 and len(steps) == len(set(steps))  # appended, no restart


class HugeReward(gym.Env):
    """Finite float64 rewards that overflow float32 storage: the losses, not the env, go non-finite."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 3e38 * 10, False, False, {}


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_non_finite_loss_stops_naming_the_step(tmp_path):
    if "test/HugeReward-v0" not in gym.registry:
        gym.register("test/HugeReward-v0", entry_point=HugeReward, max_episode_steps=50)
    cfg = TrainConfig(**{**TINY, "env_id": "test/HugeReward-v0", "eval_episodes": 0}, total_steps=300, run_dir=str(tmp_path / "r"))
    with pytest.raises(NonFiniteError, match=r"non-finite .*critic_loss.* at env step 100 .*no checkpoint was written yet"):
        train(cfg)


class DictObservation(gym.Env):
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)


class UnboundedAction(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


class ImageObservation(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)


@pytest.mark.parametrize(
    "env_cls, message",
    [
        (DictObservation, "needs a flat Box observation space"),
        (UnboundedAction, "action space must be bounded"),
        (ImageObservation, "needs a flat Box observation space"),
    ],
)
def test_unsupported_spaces_are_refused(tmp_path, env_cls, message):
    env_id = f"test/{env_cls.__name__}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=env_cls)
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{**TINY, "env_id": env_id}, total_steps=150, run_dir=str(tmp_path / "r")))


@pytest.mark.parametrize("device, message", [("tpu", "unknown device"), ("cuda", "no CUDA device")])
def test_bad_devices_are_refused(tmp_path, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so requesting it is not an error")
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{**TINY, "device": device}, total_steps=150, run_dir=str(tmp_path / "r")))


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from dacer2.train.checkpoint import CheckpointWriteError

    manager = CheckpointManager(tmp_path / "ckpt", keep=3)
    manager.save(100, {"loop": {"env_steps": 100}})

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*earlier checkpoints are intact"):
        manager.save(200, {"loop": {"env_steps": 200}})
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step_000000000100.pt"]  # no partial file left
    assert manager.load_latest()[1]["loop"]["env_steps"] == 100
