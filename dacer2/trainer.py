"""The training loop: collect with the stochastic policy, learn from replay, evaluate the deterministic policy,
log, checkpoint. `train(config)` is the whole program; the CLI and sweeps call it.

Reliability is part of the loop, not bolted on: every checkpoint holds the complete training state (networks,
optimisers, RNGs, the environments mid-episode, optionally the replay buffer), SIGINT/SIGTERM end the run with a
checkpoint, non-finite values stop it naming the step, and `resume` continues the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dacer2 import __version__
from dacer2.agent import DACER2Agent
from dacer2.checkpoint import CheckpointError, CheckpointManager, publish_copy
from dacer2.config import GAUSSIAN_ALGO, TrainConfig
from dacer2.envs import make_vector_env
from dacer2.envs.state import capture_env_state, restore_env_state
from dacer2.evaluation import evaluate
from dacer2.metrics import MetricsWriter
from dacer2.replay import ReplayBuffer

# Fields a resume may change: they do not alter the algorithm.
RESUME_OVERRIDABLE = ("total_steps", "progress", "torch_threads")
# Evaluation episodes are seeded apart from the training envs (seed, seed + 1, ...) so the two never share resets.
EVAL_SEED_OFFSET = 10_000


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class NonFiniteError(RuntimeError):
    """An observation, reward, loss or parameter became NaN/Inf."""


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
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this torch build sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__{cfg.seed}__{stamp}"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


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


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks, so the run stops at a step boundary with a
    checkpoint; a second signal interrupts immediately. Only installable from the main thread."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _load_resume(cfg: TrainConfig) -> tuple[TrainConfig, Path, dict]:
    run_dir = Path(cfg.resume)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"--resume {run_dir}: no config.json there (is it a dacer2 run directory?)")
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
    return resumed, path, payload


AgentFactory = Callable[[int, int, TrainConfig, torch.device], DACER2Agent]
# Called after every evaluation with env_steps, updates, wall_time, eval_return_mean and eval_return_std.
EvalCallback = Callable[[dict[str, float]], None]


def agent_class(cfg: TrainConfig) -> AgentFactory:
    """The agent an --algo trains: DACER2Agent for every diffusion preset, GaussianAgent for the baseline."""
    if cfg.algo == GAUSSIAN_ALGO:
        from dacer2.gaussian_agent import GaussianAgent

        return GaussianAgent
    return DACER2Agent


def train(config: TrainConfig, agent_factory: AgentFactory | None = None, on_eval: EvalCallback | None = None) -> TrainResult:
    """Run (or, with config.resume, continue) one training run. `agent_factory(obs_dim, action_dim, cfg, device)`
    builds the agent (default: the one --algo names, see agent_class). `on_eval` sees each evaluation as it
    happens (sweeps forward it to Ray Tune)."""
    resume_payload = None
    if config.resume:
        cfg, resume_path, resume_payload = _load_resume(config)
    else:
        cfg = config.resolved()
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed, cfg.deterministic)

    envs = make_vector_env(cfg.env_id, cfg.num_envs, cfg.seed)
    eval_envs = None
    if cfg.eval_episodes:
        eval_envs = make_vector_env(cfg.env_id, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json())
    except OSError as exc:
        raise ValueError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep=cfg.keep_checkpoints)

    agent = (agent_factory or agent_class(cfg))(obs_dim, action_dim, cfg, device)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, cfg.batch_size, device, seed=cfg.seed)

    # Loop state: everything besides agent, buffer and envs that an exact resume needs.
    obs, _ = envs.reset(seed=cfg.seed)
    env_steps, next_log, next_eval, next_checkpoint = 0, cfg.log_every, cfg.eval_every, cfg.checkpoint_every
    eval_history: list[tuple[int, float, float]] = []
    recent_returns: deque[float] = deque(maxlen=20)
    recent_lengths: deque[int] = deque(maxlen=20)
    episode_return = np.zeros(cfg.num_envs)
    episode_length = np.zeros(cfg.num_envs, dtype=np.int64)
    wall_offset = 0.0

    if resume_payload is not None:
        if (resume_payload["obs_dim"], resume_payload["action_dim"]) != (obs_dim, action_dim):
            raise CheckpointError(
                f"{resume_path}: checkpoint dims (obs {resume_payload['obs_dim']}, action {resume_payload['action_dim']}) "
                f"do not match {cfg.env_id} (obs {obs_dim}, action {action_dim})"
            )
        agent.load_training_state(resume_payload["agent"])
        if resume_payload.get("buffer") is not None:
            buffer.load_state_dict(resume_payload["buffer"])
        loop = resume_payload["loop"]
        env_steps, next_log, next_eval, next_checkpoint = loop["env_steps"], loop["next_log"], loop["next_eval"], loop["next_checkpoint"]
        eval_history = [tuple(e) for e in loop["eval_history"]]
        recent_returns.extend(loop["recent_returns"])
        recent_lengths.extend(loop["recent_lengths"])
        episode_return, episode_length = loop["episode_return"].copy(), loop["episode_length"].copy()
        wall_offset = loop["wall_time"]
        exact = all(restore_env_state(e, s) for e, s in zip(envs.envs, resume_payload["envs"]))
        if exact:
            obs = loop["obs"].copy()
        else:  # an env without snapshot support restarts its episodes; say so rather than pretend
            print(f"dacer2: {cfg.env_id} cannot restore mid-episode state; its episodes restart", file=sys.stderr)
            episode_return[:], episode_length[:] = 0.0, 0
        envs.action_space.np_random.bit_generator.state = resume_payload["action_space_rng"]
        _set_rng_state(resume_payload["rng"])
        print(f"dacer2: resumed {run_dir} from {resume_path.name} at {env_steps} env steps", file=sys.stderr)

    # A resumed run drops the rows logged after its checkpoint: they are about to be logged again.
    writer = MetricsWriter(run_dir, keep_until_step=env_steps if resume_payload is not None else None)
    start = time.perf_counter() - wall_offset
    last_log_time, last_log_steps = time.perf_counter(), env_steps
    metrics: dict[str, torch.Tensor] = {}

    def deterministic_policy(obs_t: torch.Tensor) -> torch.Tensor:
        return agent.act(obs_t, deterministic=True)

    def run_eval() -> None:
        if eval_envs is None:
            return
        returns = evaluate(deterministic_policy, eval_envs, device, seed=cfg.seed + EVAL_SEED_OFFSET + len(eval_history))
        eval_history.append((env_steps, float(returns.mean()), float(returns.std())))
        if on_eval is not None:
            on_eval({"env_steps": env_steps, "updates": agent.num_updates, "wall_time": time.perf_counter() - start,
                     "eval_return_mean": eval_history[-1][1], "eval_return_std": eval_history[-1][2]})

    def check_learning_finite() -> None:
        """One host sync per log event: losses and every parameter must be finite."""
        bad = [k for k, v in metrics.items() if not torch.isfinite(v).all()]
        if not bad and not all(torch.isfinite(p).all() for p in agent.parameters()):
            bad = ["network parameters"]
        if bad:
            saved = checkpoints.saved()
            last_good = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
            raise NonFiniteError(
                f"non-finite {', '.join(bad)} at env step {env_steps} (update {agent.num_updates}); {last_good}"
            )

    def log(with_eval: bool) -> None:
        nonlocal last_log_time, last_log_steps
        check_learning_finite()
        now = time.perf_counter()
        row = {
            "env_steps": env_steps,
            "updates": agent.num_updates,
            "wall_time": now - start,
            "sps": (env_steps - last_log_steps) / max(now - last_log_time, 1e-9),
            "episodic_return": float(np.mean(recent_returns)) if recent_returns else None,
            "episode_length": float(np.mean(recent_lengths)) if recent_lengths else None,
            **{k: float(v) for k, v in metrics.items()},
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

    def payload() -> dict:
        return {
            "config": dataclasses.asdict(cfg),
            "version": __version__,
            "policy_family": getattr(agent, "policy_family", "diffusion"),
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "env_steps": env_steps,
            "agent": agent.training_state(),
            "buffer": buffer.state_dict() if cfg.save_buffer else None,
            "envs": [capture_env_state(e) for e in envs.envs],
            "action_space_rng": envs.action_space.np_random.bit_generator.state,
            "rng": _rng_state(),
            "loop": {
                "env_steps": env_steps, "next_log": next_log, "next_eval": next_eval, "next_checkpoint": next_checkpoint,
                "eval_history": eval_history, "recent_returns": list(recent_returns), "recent_lengths": list(recent_lengths),
                "episode_return": episode_return.copy(), "episode_length": episode_length.copy(), "obs": obs.copy(),
                "wall_time": time.perf_counter() - start,
            },
        }

    # A terminal gets a lively bar; a log file gets a line every 30 s instead of thousands of redraws.
    progress = tqdm(
        total=cfg.total_steps, initial=env_steps, disable=not cfg.progress, unit="step", dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
    last_checkpoint = None
    try:
        with _StopSignals() as stop:
            if env_steps == 0 and eval_envs is not None:  # the untrained policy: every curve shows where it started
                run_eval()
                log(with_eval=True)
            while env_steps < cfg.total_steps:
                if env_steps < cfg.learning_starts:
                    action = envs.action_space.sample()
                else:
                    action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                next_obs, reward, terminated, truncated, real_next_obs = step_vector_env(envs, action)
                if not (np.isfinite(real_next_obs).all() and np.isfinite(reward).all()):
                    last_checkpoint = checkpoints.save(env_steps, payload())  # the state before the bad step
                    raise NonFiniteError(
                        f"{cfg.env_id} returned a non-finite observation or reward at env step {env_steps + cfg.num_envs}; "
                        f"the last good state is in {last_checkpoint}"
                    )
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
                if env_steps >= cfg.learning_starts and len(buffer) >= cfg.batch_size:
                    for _ in range(cfg.updates_per_step):
                        metrics = agent.update(buffer.sample())

                # The last step always evaluates, so every run ends with its final return in one log row.
                evaluated = env_steps >= next_eval or env_steps >= cfg.total_steps
                if evaluated:
                    run_eval()
                if env_steps >= next_eval:
                    next_eval += cfg.eval_every
                if env_steps >= next_log or evaluated:
                    log(with_eval=evaluated)
                    next_log = env_steps + cfg.log_every
                if env_steps >= next_checkpoint:
                    next_checkpoint += cfg.checkpoint_every
                    check_learning_finite()
                    last_checkpoint = checkpoints.save(env_steps, payload())
                if stop.received is not None:
                    check_learning_finite()
                    last_checkpoint = checkpoints.save(env_steps, payload())
                    name = signal.Signals(stop.received).name
                    raise TrainingInterrupted(
                        f"{name} at env step {env_steps}: checkpoint {last_checkpoint}; continue with --resume {run_dir}",
                        stop.received,
                    )

            check_learning_finite()
            last_checkpoint = checkpoints.save(env_steps, payload())
    finally:
        progress.close()
        writer.close()
        envs.close()
        if eval_envs is not None:
            eval_envs.close()

    # A stable name for the finished run's model (evaluation and deployment load it).
    final = publish_copy(last_checkpoint, run_dir / "checkpoints" / "final.pt")
    final_mean, final_std = (eval_history[-1][1], eval_history[-1][2]) if eval_history else (math.nan, math.nan)
    result = TrainResult(
        run_dir=run_dir,
        env_steps=env_steps,
        updates=agent.num_updates,
        wall_time=time.perf_counter() - start,
        final_eval_mean=final_mean,
        final_eval_std=final_std,
        eval_history=eval_history,
        checkpoint=final,
    )
    (run_dir / "result.json").write_text(
        json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}, indent=2)
    )
    return result
