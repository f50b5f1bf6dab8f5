"""dacer2-eval: evaluate a trained policy from a run directory or checkpoint file.

Prints (and optionally writes as JSON) the mean +- std return of fresh episodes, the papers' final-return metric
from the run's metrics.csv, and on the multi-goal task the multimodality metric plus the trajectory figure.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from dacer2.config import Unset


@dataclass
class EvalConfig:
    """Evaluate a trained dacer2 policy (run directory or checkpoint file)."""

    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR_OR_CHECKPOINT")]
    """Run directory (uses checkpoints/final.pt) or a checkpoint file."""
    episodes: int = 10
    """Evaluation episodes per policy mode, run as one batch of parallel envs."""
    mode: Literal["deterministic", "stochastic", "both"] = "both"
    """Policy to evaluate: deterministic (no alpha-noise, as training's evaluations), stochastic (with it) or both."""
    seed: int = 0
    """Seed of the evaluation envs and of the policy's noise."""
    device: str = "cpu"
    """Torch device for the policy: cpu, cuda (cuda:N) or auto (cuda when torch sees one)."""
    backend: Literal["auto", "fused", "reference"] = "auto"
    """Inference backend: auto picks the fastest available (fused kernels where built)."""
    torch_threads: Annotated[Optional[int], tyro.conf.arg(metavar="INT|None")] = 1
    """CPU threads for torch (None: torch's own choice)."""
    video: Unset[str] = None
    """Record one deterministic episode to this .gif (.mp4 needs imageio-ffmpeg); MuJoCo needs EGL or OSMesa (default:
no video)."""
    multigoal_rollouts: int = 100
    """Multi-goal task only: rollouts from (0, 0) per mode for the goal-coverage metric."""
    trajectories_per_start: int = 10
    """Multi-goal task only: rollouts per start point drawn in the trajectory figure."""
    plot: Unset[str] = None
    """Multi-goal task only: trajectory figure path (default: RUN_DIR/eval/multigoal_trajectories.png)."""
    json_out: Unset[str] = None
    """Also write every number printed here to this JSON file (default: print them only)."""


def _modes(mode: str) -> list[tuple[str, bool]]:
    """(name, deterministic flag) of each policy mode to evaluate, deterministic first."""
    return [(name, name == "deterministic") for name in ("deterministic", "stochastic") if mode in (name, "both")]


def eval_device(name: str) -> str:
    """--device checked as dacer2-train checks it, before any file is read: a CUDA request on a machine whose torch
    sees no CUDA device is said as such, not as an unreadable checkpoint."""
    from dacer2.train.training_run import resolve_device

    try:
        return str(resolve_device(name))
    except ValueError as exc:
        hint = "; use --device cpu" if name.startswith("cuda") and "--device cpu" not in str(exc) else ""
        raise ValueError(f"{exc}{hint}") from None


def run_eval(cfg: EvalConfig) -> dict:
    import torch

    from dacer2.envs import MULTIGOAL_ID, make_vector_env
    from dacer2.analysis.evaluation import evaluate
    from dacer2.deploy.policy import Policy

    if cfg.episodes < 1 or cfg.multigoal_rollouts < 1 or cfg.trajectories_per_start < 1:
        raise ValueError("--episodes, --multigoal-rollouts and --trajectories-per-start must be positive")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.video:  # fail on a bad path or a missing writer before spending time on evaluation
        from dacer2.analysis.video import check_video_path

        check_video_path(cfg.video)
    device = eval_device(cfg.device)
    policy = Policy.load(cfg.path, device=device, backend=cfg.backend, seed=cfg.seed)
    env_id = policy.info.env_id
    ckpt = policy.info.checkpoint
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    report: dict = {"checkpoint": str(ckpt), "env_id": env_id, "policy_family": policy.info.policy_family,
                    "env_steps": policy.info.env_steps, "returns": {}}
    print(f"{policy}\ncheckpoint: {ckpt}")

    envs = make_vector_env(env_id, cfg.episodes, cfg.seed)
    try:
        for name, deterministic in _modes(cfg.mode):
            policy.seed(cfg.seed)
            returns = evaluate(lambda obs: policy.act_normalized(obs, deterministic), envs, policy.device, cfg.seed)
            report["returns"][name] = {"mean": float(returns.mean()), "std": float(returns.std()),
                                       "episodes": cfg.episodes}
            print(f"{name:>13} return: {returns.mean():.1f} +- {returns.std():.1f} "
                  f"over {cfg.episodes} episodes")
    finally:
        envs.close()

    if (run_dir / "metrics.csv").is_file():
        from dacer2.analysis.runs import read_eval_history, final_return

        steps, means, _ = read_eval_history(run_dir / "metrics.csv")
        if steps.size:
            report["final_return"] = final_return(steps, means)
            print(f"final return (best training evaluation in the last 10% of {int(steps.max())} env steps): "
                  f"{report['final_return']:.1f}")

    if env_id == MULTIGOAL_ID:
        report["multigoal"] = multigoal_report(policy, cfg, run_dir)

    if cfg.video:
        from dacer2.analysis.video import record_episode

        policy.seed(cfg.seed)
        frames = record_episode(env_id, lambda obs: policy.act(obs, deterministic=True), cfg.video, seed=cfg.seed)
        report["video"] = cfg.video
        print(f"video: {cfg.video} ({frames} frames)")

    if cfg.json_out:
        Path(cfg.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def multigoal_report(policy, cfg: EvalConfig, run_dir: Path) -> dict:
    """Goal coverage from (0, 0) per mode, and the trajectory figure from the five start points."""
    import numpy as np

    from dacer2.analysis.multigoal_plot import START_POINTS, plot_trajectories
    from dacer2.analysis.multimodality import rollout_goals

    out: dict = {}
    panels = {}
    for name, deterministic in _modes(cfg.mode):
        policy.seed(cfg.seed)
        act = lambda obs, d=deterministic: policy.act(obs, deterministic=d)  # noqa: E731
        stats = rollout_goals(act, cfg.multigoal_rollouts).stats
        out[name] = stats.as_dict()
        print(f"{name:>13} goals from (0, 0): {stats.summary()}")
        k = cfg.trajectories_per_start
        starts = np.repeat(np.asarray(START_POINTS), k, axis=0)  # all start points in one batched rollout
        paths = rollout_goals(act, len(starts), start=starts).trajectories
        per_start = [paths[i * k:(i + 1) * k] for i in range(len(START_POINTS))]
        panels[f"{policy.info.policy_family} policy, {name}\ncoverage {stats.coverage}/4 "
               f"({cfg.multigoal_rollouts} rollouts)"] = per_start
    plot_path = Path(cfg.plot) if cfg.plot else run_dir / "eval" / "multigoal_trajectories.png"
    plot_trajectories(panels, plot_path, title=f"{policy.info.env_steps} env steps")
    out["plot"] = str(plot_path)
    print(f"trajectory plot: {plot_path}")
    return out


def eval_main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(EvalConfig, args=argv, prog="dacer2-eval")
    from dacer2.cli.train import USER_ERRORS
    from dacer2.analysis.video import RenderError

    try:
        run_eval(cfg)
    except (*USER_ERRORS, RenderError) as exc:
        print(f"dacer2-eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dacer2-eval: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(eval_main())
