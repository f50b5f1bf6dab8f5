"""What a training checkpoint holds and how a run continues from one: the payload is written and read here only,
next to each other, so the two sides cannot drift apart.

The layout is the one dacer2 has written since checkpoints began (format 1): checkpoints of runs in progress,
such as a long sweep's, keep resuming after an upgrade. tests/test_resume_compat.py holds such a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from dacer2 import __version__
from dacer2.train.checkpoint import CheckpointError, CheckpointManager
from dacer2.config import TrainConfig
from dacer2.train.loop_state import LoopState
from dacer2.train.training_run import TrainingRun

# Fields a resume may change: they do not alter the algorithm. The device among them: config.json names the one a run
# ran on, and a run from a GPU may continue on a CPU (--device auto, the default, picks what this machine has).
RESUME_OVERRIDABLE = ("total_steps", "progress", "torch_threads", "device", "cuda_graphs", "keep_freed_memory")


@dataclasses.dataclass
class ResumePoint:
    path: Path  # the checkpoint file
    payload: dict


def load_resume(cfg: TrainConfig) -> tuple[TrainConfig, ResumePoint]:
    """The saved run's config (with the overridable fields of `cfg` applied) and its newest usable checkpoint."""
    run_dir = Path(cfg.resume)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"--resume {run_dir}: no config.json there (is it a dacer2 run directory?)")
    _refuse_unchangeable_options(cfg)
    saved = TrainConfig.from_dict(json.loads(config_path.read_text()))
    overrides = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE if getattr(cfg, k) is not None}
    resumed = dataclasses.replace(saved, **overrides, resume=str(run_dir), run_dir=str(run_dir)).resolved()
    path, payload = CheckpointManager(run_dir / "checkpoints").load_latest()
    if payload.get("config", {}).get("algo") != resumed.algo or payload.get("config", {}).get("env_id") != resumed.env_id:
        raise CheckpointError(f"{path} does not belong to this run's config ({resumed.algo} on {resumed.env_id})")
    if payload["loop"]["env_steps"] >= resumed.total_steps:
        raise ValueError(
            f"the run already has {payload['loop']['env_steps']} env steps; pass a larger --total-steps to continue it"
        )
    return resumed, ResumePoint(path, payload)


def _refuse_unchangeable_options(cfg: TrainConfig) -> None:
    """A resume continues the saved config: an option it would ignore (say --eta) is an error, not a silent no-op.
    Options are recognised by differing from their defaults."""
    defaults = TrainConfig(resume=cfg.resume)
    given = [f.name for f in dataclasses.fields(TrainConfig)
             if f.name not in (*RESUME_OVERRIDABLE, "resume") and getattr(cfg, f.name) != getattr(defaults, f.name)]
    if given:
        flags = lambda names: ", ".join(f"--{n.replace('_', '-')}" for n in names)  # noqa: E731
        raise ValueError(
            f"--resume continues {cfg.resume} with its saved config, so {flags(given)} would be ignored; a resume can "
            f"change only {flags(RESUME_OVERRIDABLE)} (start a new run to change the others)"
        )


def _global_rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_global_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def checkpoint_payload(run: TrainingRun, loop: LoopState) -> dict:
    """Everything an exact resume needs; `policy_family`, the dims and `agent.modules` also let Policy.load
    rebuild the trained policy alone."""
    cfg = run.cfg
    return {
        "config": dataclasses.asdict(cfg),
        "version": __version__,
        "policy_family": run.agent.policy_family,
        "obs_dim": run.obs_dim,
        "action_dim": run.action_dim,
        "env_steps": loop.env_steps,
        "agent": run.agent.training_state(),
        "buffer": run.buffer.state_dict() if cfg.save_buffer else None,
        "envs": list(run.envs.call("capture_state")),
        "action_space_rng": run.envs.action_space.np_random.bit_generator.state,
        "rng": _global_rng_state(),
        "loop": loop.to_checkpoint(),
    }


def restore(run: TrainingRun, resume: ResumePoint, fresh: LoopState) -> LoopState:
    """Load a checkpoint into a run built from its config; `fresh` is the loop state after the envs' first reset,
    which an env that cannot restore mid-episode continues from."""
    payload, cfg = resume.payload, run.cfg
    if (payload["obs_dim"], payload["action_dim"]) != (run.obs_dim, run.action_dim):
        raise CheckpointError(
            f"{resume.path}: checkpoint dims (obs {payload['obs_dim']}, action {payload['action_dim']}) "
            f"do not match {cfg.env_id} (obs {run.obs_dim}, action {run.action_dim})"
        )
    run.agent.load_training_state(payload["agent"])
    if payload.get("buffer") is not None:
        run.buffer.load_state_dict(payload["buffer"])
    elif payload["loop"]["env_steps"] > 0:
        print(f"dacer2: {resume.path.name} holds no replay buffer (the run did not use --save-buffer): updates resume "
              f"once the current policy has refilled {cfg.batch_size} transitions, so the run is not an exact "
              "continuation", file=sys.stderr)
    loop = LoopState.from_checkpoint(payload["loop"])
    run.envs.set_attr("pending_state", list(payload["envs"]))
    if not all(run.envs.call("restore_pending_state")):
        # an env without snapshot support restarts its episodes; say so rather than pretend
        print(f"dacer2: {cfg.env_id} cannot restore mid-episode state; its episodes restart", file=sys.stderr)
        loop.obs = fresh.obs
        loop.episode_return[:], loop.episode_length[:] = 0.0, 0
    run.envs.action_space.np_random.bit_generator.state = payload["action_space_rng"]
    _set_global_rng_state(payload["rng"])
    print(f"dacer2: resumed {run.run_dir} from {resume.path.name} at {loop.env_steps} env steps", file=sys.stderr)
    return loop
