"""dacer2-train: parses a TrainConfig with tyro (field docstrings become --help) and calls dacer2.train.trainer.train;
expected failures (bad config, unknown env) become one line on stderr and exit code 2. USER_ERRORS is shared by
the other commands, which report the same failures the same way."""

from __future__ import annotations

import sys

import tyro

from dacer2.train.checkpoint import CheckpointError, CheckpointWriteError
from dacer2.config import TrainConfig
from dacer2.envs import EnvError
from dacer2.train.phase_times import describe

# Failures a user can act on: one line on stderr, no traceback.
USER_ERRORS = (ValueError, EnvError, CheckpointError)


def train_main(argv: list[str] | None = None) -> int:
    config = tyro.cli(TrainConfig, args=argv)
    from dacer2.train.trainer import NonFiniteError, TrainingInterrupted, train  # after parsing: --help stays fast

    try:
        result = train(config)
    except USER_ERRORS as exc:
        print(f"dacer2-train: error: {exc}", file=sys.stderr)
        return 2
    except (NonFiniteError, CheckpointWriteError) as exc:
        print(f"dacer2-train: error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"dacer2-train: stopped: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("dacer2-train: interrupted without a checkpoint", file=sys.stderr)
        return 130
    print(
        f"final eval return {result.final_eval_mean:.1f} +- {result.final_eval_std:.1f} "
        f"after {result.env_steps} env steps ({result.iterations} iterations), {result.updates} updates, {result.wall_time:.0f} s; run dir: {result.run_dir}"
    )
    if result.eval_history:
        best_steps, best_mean, best_std = max(result.eval_history, key=lambda e: e[1])
        print(f"best eval return {best_mean:.1f} +- {best_std:.1f} at {best_steps} env steps "
              f"(untrained policy: {result.eval_history[0][1]:.1f})")
    if result.time_breakdown:
        print(f"where the time went: {describe(result.time_breakdown)}")
    print(f"GEMM precision: {result.precision}; CUDA graphs: {result.cuda_graphs}; code: {result.code}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
