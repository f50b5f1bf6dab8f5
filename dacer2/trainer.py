"""The training loop: collect with the stochastic policy, learn from replay, evaluate the deterministic policy,
log, checkpoint. `train(config)` is the whole program; the CLI and sweeps call it."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dacer2 import __version__
from dacer2.agent import DACER2Agent
from dacer2.checkpoint import save_checkpoint
from dacer2.config import TrainConfig
from dacer2.envs import make_vector_env
from dacer2.evaluation import evaluate
from dacer2.metrics import MetricsWriter
from dacer2.replay import ReplayBuffer


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    updates: int
    wall_time: float
    final_eval_mean: float
    final_eval_std: float
    eval_history: list[tuple[int, float, float]] = field(default_factory=list)  # (env_steps, mean, std)
    checkpoint: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this torch build sees no CUDA device")
    return torch.device(name)


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__{cfg.seed}__{stamp}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_vector_env(envs: gym.vector.VectorEnv, action: np.ndarray):
    """Step a same-step-autoreset vector env. Returns (next_obs, reward, terminated, truncated, real_next_obs):
    next_obs already belongs to the new episode where an env finished; real_next_obs holds the transition's
    true next state (the final observation) there. Only `terminated` may cut the bootstrap, never truncation."""
    next_obs, reward, terminated, truncated, info = envs.step(action)
    real_next_obs = next_obs.copy()
    done = terminated | truncated
    if done.any():
        real_next_obs[done] = np.stack(info["final_obs"][done])
    return next_obs, reward, terminated, truncated, real_next_obs


def train(config: TrainConfig) -> TrainResult:
    cfg = config.resolved()
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)

    envs = make_vector_env(cfg.env_id, cfg.num_envs, cfg.seed)
    eval_envs = make_vector_env(cfg.env_id, cfg.eval_episodes, cfg.seed + 10_000) if cfg.eval_episodes else None
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    writer = MetricsWriter(run_dir)

    agent = DACER2Agent(obs_dim, action_dim, cfg, device)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, cfg.batch_size, device, seed=cfg.seed)

    def deterministic_policy(obs: torch.Tensor) -> torch.Tensor:
        return agent.act(obs, deterministic=True)

    start = time.perf_counter()
    env_steps, next_log, next_eval = 0, cfg.log_every, cfg.eval_every
    eval_history: list[tuple[int, float, float]] = []
    recent_returns: deque[float] = deque(maxlen=20)
    recent_lengths: deque[int] = deque(maxlen=20)
    episode_return = np.zeros(cfg.num_envs)
    episode_length = np.zeros(cfg.num_envs, dtype=np.int64)
    metrics: dict[str, torch.Tensor] = {}
    last_log_time, last_log_steps = start, 0

    def run_eval() -> None:
        if eval_envs is None:
            return
        returns = evaluate(deterministic_policy, eval_envs, device, seed=cfg.seed + 10_000 + len(eval_history))
        eval_history.append((env_steps, float(returns.mean()), float(returns.std())))

    def log(with_eval: bool) -> None:
        nonlocal last_log_time, last_log_steps
        now = time.perf_counter()
        row = {
            "env_steps": env_steps,
            "updates": agent.num_updates,
            "wall_time": now - start,
            "sps": (env_steps - last_log_steps) / max(now - last_log_time, 1e-9),
            "episodic_return": float(np.mean(recent_returns)) if recent_returns else None,
            "episode_length": float(np.mean(recent_lengths)) if recent_lengths else None,
            **{k: float(v) for k, v in metrics.items()},  # the only host sync: once per log event
        }
        if with_eval and eval_history:
            row["eval_return_mean"], row["eval_return_std"] = eval_history[-1][1:]
        writer.write(row)
        last_log_time, last_log_steps = now, env_steps
        progress.set_postfix(
            sps=f"{row['sps']:.0f}",
            ret=f"{row['episodic_return']:.1f}" if row["episodic_return"] is not None else "-",
            eval=f"{eval_history[-1][1]:.1f}" if eval_history else "-",
            refresh=False,
        )

    obs, _ = envs.reset(seed=cfg.seed)
    # A terminal gets a lively bar; a log file gets a line every 30 s instead of thousands of redraws.
    progress = tqdm(
        total=cfg.total_steps, disable=not cfg.progress, unit="step", dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
    try:
        while env_steps < cfg.total_steps:
            if env_steps < cfg.learning_starts:
                action = envs.action_space.sample()
            else:
                action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            next_obs, reward, terminated, truncated, real_next_obs = step_vector_env(envs, action)
            done = terminated | truncated
            buffer.add(obs, action, reward, real_next_obs, terminated)
            obs = next_obs

            episode_return += reward
            episode_length += 1
            for i in np.flatnonzero(done):
                recent_returns.append(float(episode_return[i]))
                recent_lengths.append(int(episode_length[i]))
            episode_return[done] = 0.0
            episode_length[done] = 0

            env_steps += cfg.num_envs
            progress.update(cfg.num_envs)
            if env_steps >= cfg.learning_starts:
                for _ in range(cfg.updates_per_step):
                    metrics = agent.update(buffer.sample())

            evaluated = False
            if env_steps >= next_eval:
                run_eval()
                next_eval += cfg.eval_every
                evaluated = True
            if env_steps >= next_log or evaluated:
                log(with_eval=evaluated)
                next_log = env_steps + cfg.log_every

        if not eval_history or eval_history[-1][0] != env_steps:
            run_eval()
            log(with_eval=True)
    finally:
        progress.close()
        writer.close()
        envs.close()
        if eval_envs is not None:
            eval_envs.close()

    checkpoint = save_checkpoint(
        run_dir / "checkpoints" / "final.pt",
        {
            "config": dataclasses.asdict(cfg),
            "version": __version__,
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "env_steps": env_steps,
            "agent": agent.training_state(),
        },
    )
    final_mean, final_std = (eval_history[-1][1], eval_history[-1][2]) if eval_history else (float("nan"),) * 2
    result = TrainResult(
        run_dir=run_dir,
        env_steps=env_steps,
        updates=agent.num_updates,
        wall_time=time.perf_counter() - start,
        final_eval_mean=final_mean,
        final_eval_std=final_std,
        eval_history=eval_history,
        checkpoint=checkpoint,
    )
    (run_dir / "result.json").write_text(
        json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}, indent=2)
    )
    return result
