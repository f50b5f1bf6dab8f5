"""The training loop: collect with the stochastic policy, learn from replay, evaluate the deterministic policy,
log, checkpoint. `train(config)` is the whole program; the CLI and sweeps call it.

Reliability is part of the loop, not bolted on: every checkpoint holds the complete training state (networks,
optimisers, RNGs, the environments mid-episode, optionally the replay buffer), SIGINT/SIGTERM end the run with a
checkpoint, non-finite values stop it naming the step, and `resume` continues the same run.

The parts: `build_run` (training_run.py) makes the objects a run works with, `LoopState` (loop_state.py) is what
the loop carries between iterations, resume.py writes and reads checkpoints; this module is the loop itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from dacer2.algo.precision import host_description
from dacer2.train.announce import FinishProjection, announce, start_block
from dacer2.train.provenance import code_version
from dacer2.train.checkpoint import publish_copy
from dacer2.config import TrainConfig, iterations
from dacer2.analysis.evaluation import evaluate
from dacer2.train.loop_state import LoopState
from dacer2.train.resume import RESUME_OVERRIDABLE, ResumePoint, checkpoint_payload, load_resume, restore
from dacer2.train.training_run import (
    EVAL_SEED_OFFSET, AgentFactory, EvalCallback, TrainingRun, build_run, default_run_dir, eval_seed,
    resolve_device, seed_everything,
)

__all__ = [  # the public names; several live in the modules above and stay importable from here too
    "EVAL_SEED_OFFSET", "RESUME_OVERRIDABLE", "AgentFactory", "EvalCallback", "NonFiniteError", "TrainResult",
    "TrainingInterrupted", "default_run_dir", "resolve_device", "seed_everything", "step_vector_env",
    "train",
]


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
    iterations: int  # steps of all training envs (env_steps / num_envs)
    updates: int
    wall_time: float
    final_eval_mean: float
    final_eval_std: float
    eval_history: list[tuple[int, float, float]] = field(default_factory=list)  # (env_steps, mean, std)
    checkpoint: Path | None = None
    # Seconds per loop phase in this process (a resumed run counts from its resume), the loop's overhead share.
    time_breakdown: dict = field(default_factory=dict)
    precision: str = "fp32"  # of the GEMMs, and why: "bf16 (auto: the CPU has amx_bf16 ...)"
    host: str = ""  # the CPU or GPU that ran the run's last stretch (wall times compare only within one host)
    cuda_graphs: str = "off"  # whether the updates were replayed CUDA graphs: on, off, or off after a failed capture
    host_memory: str = ""  # whether glibc malloc was told to keep freed memory (--keep-freed-memory)
    code: str = ""  # the package version and git commit that ran the run's last stretch


def step_vector_env(envs: gym.vector.VectorEnv, action: np.ndarray):
    """Step a same-step-autoreset vector env. Returns (next_obs, reward, terminated, truncated, real_next_obs):
    next_obs already belongs to the new episode where an env finished; real_next_obs holds the transition's
    true next state (the final observation) there. Only `terminated` may cut the bootstrap, never truncation."""
    return same_step_transitions(envs.step(action))


def same_step_transitions(step_result: tuple):
    """step_vector_env's outputs from a vector env's step (or step_wait) result."""
    next_obs, reward, terminated, truncated, info = step_result
    real_next_obs = next_obs.copy()
    done = terminated | truncated
    if done.any():
        real_next_obs[done] = np.stack(info["final_obs"][done])
    return next_obs, reward, terminated, truncated, real_next_obs


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


def train(config: TrainConfig, agent_factory: AgentFactory | None = None, on_eval: EvalCallback | None = None) -> TrainResult:
    """Run (or, with config.resume, continue) one training run. `agent_factory(obs_dim, action_dim, cfg, device)`
    builds the agent (default: DACER2Agent with the policy head --algo names). `on_eval` sees each evaluation as it
    happens (sweeps forward it to Ray Tune)."""
    cfg, resume = load_resume(config) if config.resume else (config.resolved(), None)
    run = build_run(cfg, agent_factory, on_eval)
    try:
        loop = _start(run, resume)
        with _StopSignals() as stop:
            _run_loop(run, loop, stop)
    finally:
        run.close()
    return _finish(run, loop)


# ---------------------------------------------------------------------------------------------------------------
# The steps of train(), in the order they run
# ---------------------------------------------------------------------------------------------------------------
def _start(run: TrainingRun, resume: ResumePoint | None) -> LoopState:
    """The loop state at step 0, or the checkpoint's; then the logs open and the clock starts."""
    obs, _ = run.envs.reset(seed=run.cfg.seed)  # also before a restore: env snapshots load into reset envs
    loop = LoopState.fresh(run.cfg, obs)
    if resume is not None:
        loop = restore(run, resume, fresh=loop)
    announce(start_block(run.cfg, run.run_dir, loop.env_steps if resume else None, run.cfg.precision))
    run.open_logs(loop.env_steps, resumed=resume is not None)  # the progress bar starts below the block
    loop.start_clock()
    return loop


def _run_loop(run: TrainingRun, loop: LoopState, stop: _StopSignals) -> None:
    if loop.env_steps == 0 and run.eval_envs is not None:  # the untrained policy: every curve shows where it started
        _evaluate(run, loop)
        _log(run, loop, with_eval=True)
    overlap = run.cfg.vector_env == "async"
    projection = FinishProjection()
    while loop.env_steps < run.cfg.total_steps:
        if overlap:  # the workers step the envs while this process makes the updates
            action = _choose_actions(run, loop)
            run.envs.step_async(action)
            _learn(run, loop)
            with loop.times.phase("env"):
                outcome = same_step_transitions(run.envs.step_wait())
            _record_step(run, loop, (action, *outcome))
        else:
            _step_envs(run, loop)
            _learn(run, loop)
        announce(projection.observe(run.cfg, loop.env_steps, run.agent.num_updates))
        _evaluate_log_checkpoint(run, loop)
        if stop.received is not None:
            _stop(run, loop, stop.received)
    with loop.times.phase("checkpoint"):
        _checkpoint(run, loop)


def _choose_actions(run: TrainingRun, loop: LoopState) -> np.ndarray:
    """One action per env: uniform random until learning starts, then the policy's."""
    if loop.env_steps < run.cfg.learning_starts:
        return run.envs.action_space.sample()
    with loop.times.phase("act"):
        return run.learner.act(loop.obs)


def _step_envs(run: TrainingRun, loop: LoopState) -> None:
    """One action per env, its transition into the replay buffer."""
    action = _choose_actions(run, loop)
    with loop.times.phase("env"):
        outcome = step_vector_env(run.envs, action)
    _record_step(run, loop, (action, *outcome))


def _record_step(run: TrainingRun, loop: LoopState, outcome: tuple) -> None:
    """The iteration's transitions into the replay buffer, after checking them; the loop moves to next_obs."""
    cfg = run.cfg
    action, next_obs, reward, terminated, truncated, real_next_obs = outcome
    if not (np.isfinite(real_next_obs).all() and np.isfinite(reward).all()):
        _save(run, loop)  # the state before the bad step
        raise NonFiniteError(
            f"{cfg.env_id} returned a non-finite observation or reward at env step {loop.env_steps + cfg.num_envs}; "
            f"the last good state is in {loop.last_checkpoint}"
        )
    with loop.times.phase("replay"):
        run.buffer.add(loop.obs, action, reward, real_next_obs, terminated)
    loop.obs = next_obs
    loop.record_step(reward, terminated | truncated)
    loop.env_steps += cfg.num_envs
    run.progress.update(cfg.num_envs)


def _learn(run: TrainingRun, loop: LoopState) -> None:
    cfg = run.cfg
    if loop.env_steps >= cfg.learning_starts and len(run.buffer) >= cfg.batch_size:
        for _ in range(cfg.updates_per_step):
            # The replay sample is part of the update (a CUDA graph replays both). The update that re-estimates
            # the entropy (one in alpha_every) is filed as the entropy fit's time.
            with loop.times.phase("entropy" if run.agent.refits_entropy_next() else "update"):
                loop.metrics = run.learner.step()


def _evaluate_log_checkpoint(run: TrainingRun, loop: LoopState) -> None:
    """Whichever of evaluation, log row and checkpoint is due at this step."""
    cfg = run.cfg
    # The last step always evaluates, so every run ends with its final return in one log row.
    evaluated = loop.env_steps >= loop.next_eval or loop.env_steps >= cfg.total_steps
    if evaluated:
        with loop.times.phase("eval"):
            _evaluate(run, loop)
    if loop.env_steps >= loop.next_eval:
        loop.next_eval += cfg.eval_every
    if loop.env_steps >= loop.next_log or evaluated:
        with loop.times.phase("log"):
            _log(run, loop, with_eval=evaluated)
        loop.next_log = loop.env_steps + cfg.log_every
    if loop.env_steps >= loop.next_checkpoint:
        loop.next_checkpoint += cfg.checkpoint_every
        with loop.times.phase("checkpoint"):
            _checkpoint(run, loop)


def _evaluate(run: TrainingRun, loop: LoopState) -> None:
    """Deterministic-policy returns over cfg.eval_episodes episodes, each evaluation with its own seed."""
    if run.eval_envs is None:
        return
    act = partial(run.agent.act, deterministic=True)
    returns = evaluate(act, run.eval_envs, run.device, seed=eval_seed(run.cfg) + len(loop.eval_history))
    loop.eval_history.append((loop.env_steps, float(returns.mean()), float(returns.std())))
    if run.on_eval is not None:
        run.on_eval({"env_steps": loop.env_steps, "updates": run.agent.num_updates, "wall_time": loop.elapsed(),
                     "eval_return_mean": loop.eval_history[-1][1], "eval_return_std": loop.eval_history[-1][2]})


def _log(run: TrainingRun, loop: LoopState, with_eval: bool) -> None:
    """One metrics row (CSV and TensorBoard) and the progress bar's figures."""
    _check_learning_finite(run, loop)
    now = time.perf_counter()
    recent_returns, recent_lengths = loop.recent_returns, loop.recent_lengths
    row = {
        "env_steps": loop.env_steps,
        "iterations": iterations(loop.env_steps, run.cfg.num_envs),
        "updates": run.agent.num_updates,
        "wall_time": now - loop.clock_origin,
        "sps": (loop.env_steps - loop.last_log_steps) / max(now - loop.last_log_time, 1e-9),
        "episodic_return": float(np.mean(recent_returns)) if recent_returns else None,
        "episode_length": float(np.mean(recent_lengths)) if recent_lengths else None,
        **{k: float(v) for k, v in loop.metrics.items()},
    }
    if with_eval and loop.eval_history:
        row["eval_return_mean"], row["eval_return_std"] = loop.eval_history[-1][1:]
    run.writer.write(row)
    loop.last_log_time, loop.last_log_steps = now, loop.env_steps
    run.progress.set_postfix(
        sps=f"{row['sps']:.0f}",
        ret=f"{row['episodic_return']:.1f}" if row["episodic_return"] is not None else "-",
        eval=f"{loop.eval_history[-1][1]:.1f}" if loop.eval_history else "-",
        refresh=False,
    )


def _check_learning_finite(run: TrainingRun, loop: LoopState) -> None:
    """One host sync per log event: losses and every parameter must be finite."""
    bad = [k for k, v in loop.metrics.items() if not torch.isfinite(v).all()]
    if not bad and not all(torch.isfinite(p).all() for p in run.agent.parameters()):
        bad = ["network parameters"]
    if bad:
        saved = run.checkpoints.saved()
        last_good = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite {', '.join(bad)} at env step {loop.env_steps} (update {run.agent.num_updates}); {last_good}"
        )


def _checkpoint(run: TrainingRun, loop: LoopState) -> None:
    """A checkpoint of a state known to be finite."""
    _check_learning_finite(run, loop)
    _save(run, loop)


def _save(run: TrainingRun, loop: LoopState) -> None:
    loop.last_checkpoint = run.checkpoints.save(loop.env_steps, checkpoint_payload(run, loop))


def _stop(run: TrainingRun, loop: LoopState, signum: int) -> None:
    _checkpoint(run, loop)
    raise TrainingInterrupted(
        f"{signal.Signals(signum).name} at env step {loop.env_steps}: checkpoint {loop.last_checkpoint}; "
        f"continue with --resume {run.run_dir}",
        signum,
    )


def _finish(run: TrainingRun, loop: LoopState) -> TrainResult:
    # A stable name for the finished run's model (evaluation and deployment load it).
    final = publish_copy(loop.last_checkpoint, run.run_dir / "checkpoints" / "final.pt")
    history = loop.eval_history
    final_mean, final_std = (history[-1][1], history[-1][2]) if history else (math.nan, math.nan)
    result = TrainResult(
        run_dir=run.run_dir,
        env_steps=loop.env_steps,
        iterations=iterations(loop.env_steps, run.cfg.num_envs),
        updates=run.agent.num_updates,
        wall_time=loop.elapsed(),
        final_eval_mean=final_mean,
        final_eval_std=final_std,
        eval_history=history,
        checkpoint=final,
        time_breakdown=loop.times.breakdown(),
        precision=f"{run.cfg.precision} ({run.cfg.precision_reason})",
        host=host_description(run.agent.device),
        cuda_graphs=run.learner.describe(),
        host_memory=run.host_memory,
        code=code_version(),
    )
    (run.run_dir / "result.json").write_text(
        json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}, indent=2)
    )
    return result
