"""The objects one training run works with (device, environments, run directory, agent, replay buffer, logs),
built from its resolved config in the order that makes a run reproducible from its seed."""

from __future__ import annotations

import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dacer2.algo.agent import DACER2Agent
from dacer2.train.checkpoint import CheckpointManager
from dacer2.train.host_memory import keep_freed_memory
from dacer2.config import TrainConfig
from dacer2.envs import make_vector_env
from dacer2.train.metrics import MetricsWriter
from dacer2.train.learner import Learner
from dacer2.train.replay import ReplayBuffer
from dacer2.analysis.runs import run_name

# Evaluation episodes are seeded apart from the training envs (seed, seed + 1, ...) so the two never share resets.
EVAL_SEED_OFFSET = 10_000

AgentFactory = Callable[[int, int, TrainConfig, torch.device], DACER2Agent]
# Called after every evaluation with env_steps, updates, wall_time, eval_return_mean and eval_return_std.
EvalCallback = Callable[[dict[str, float]], None]


def eval_seed(cfg: TrainConfig) -> int:
    """The evaluation envs' seed; evaluation number k resets them with eval_seed + k."""
    return cfg.seed + EVAL_SEED_OFFSET


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this torch build sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{run_name(cfg.env_id, cfg.algo, cfg.seed)}__{stamp}"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


@dataclass
class TrainingRun:
    cfg: TrainConfig
    device: torch.device
    envs: gym.vector.VectorEnv
    eval_envs: gym.vector.VectorEnv | None  # None when cfg.eval_episodes is 0
    obs_dim: int
    action_dim: int
    run_dir: Path
    checkpoints: CheckpointManager
    agent: DACER2Agent
    buffer: ReplayBuffer
    learner: Learner  # the envs' actions and one update per call, eager or replayed CUDA graphs
    on_eval: EvalCallback | None = None
    writer: MetricsWriter | None = None  # opened by open_logs, once a resume has restored its step count
    progress: tqdm | None = None
    host_memory: str = "unchanged (--no-keep-freed-memory)"  # what the run did to the C allocator

    def open_logs(self, env_steps: int, resumed: bool) -> None:
        # A resumed run drops the rows logged after its checkpoint: they are about to be logged again.
        self.writer = MetricsWriter(self.run_dir, keep_until_step=env_steps if resumed else None,
                                    num_envs=self.cfg.num_envs)
        # A terminal gets a lively bar; a log file gets a line every 30 s instead of thousands of redraws.
        self.progress = tqdm(
            total=self.cfg.total_steps, initial=env_steps, disable=not self.cfg.progress, unit="step",
            dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()
        self.envs.close()
        if self.eval_envs is not None:
            self.eval_envs.close()


# What a run writes into its directory: a directory holding any of them holds a run.
RUN_FILES = ("config.json", "metrics.csv", "result.json", "checkpoints", "events.out.tfevents.*")


def claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory that already holds a run, so two runs never mix their logs and checkpoints; with
    `overwrite` (--overwrite), delete that run's files first (only those: anything else in the folder stays)."""
    found = sorted({p for pattern in RUN_FILES for p in run_dir.glob(pattern)})
    if not found:
        return
    if not overwrite:
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(sorted({_kind(p) for p in found}))}); continue it with "
            f"--resume {run_dir}, "
            f"or choose a fresh --run-dir (--overwrite deletes that run's files and starts over)"
        )
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _kind(path: Path) -> str:
    return "TensorBoard events" if path.name.startswith("events.out.tfevents.") else path.name


def build_run(cfg: TrainConfig, agent_factory: AgentFactory | None, on_eval: EvalCallback | None) -> TrainingRun:
    """Seed, then create envs, run directory, agent and buffer: the agent's initial weights come from the seed."""
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    host_memory = keep_freed_memory() if cfg.keep_freed_memory else TrainingRun.host_memory
    seed_everything(cfg.seed, cfg.deterministic)

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if not cfg.resume:
        claim_run_dir(run_dir, cfg.overwrite)
    envs = make_vector_env(cfg.env_id, cfg.num_envs, cfg.seed, mode=cfg.vector_env)
    eval_envs = make_vector_env(cfg.env_id, cfg.eval_episodes, eval_seed(cfg)) if cfg.eval_episodes else None
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]

    agent = (agent_factory or DACER2Agent)(obs_dim, action_dim, cfg, device)  # its policy head comes from cfg.algo
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, cfg.batch_size, device, seed=cfg.seed)
    learner = Learner(agent, buffer, graphs=cfg.cuda_graphs == "on")
    # config.json names what ran, not what was asked for: "auto" could resolve differently elsewhere, and a fused
    # run is not bitwise a reference run. Written only now, so a run that failed to build leaves no directory behind.
    cfg.device, cfg.backend = device.type, getattr(agent, "backend", cfg.backend)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json())
    except OSError as exc:
        raise ValueError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    return TrainingRun(cfg, device, envs, eval_envs, obs_dim, action_dim, run_dir, checkpoints, agent, buffer, learner,
                       on_eval, host_memory=host_memory)
