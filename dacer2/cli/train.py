"""dacer2-train: parses a TrainConfig with tyro (field docstrings become --help) and calls dacer2.train.trainer.train;
expected failures (bad config, unknown env) become one line on stderr and exit code 2. USER_ERRORS is shared by
the other commands, which report the same failures the same way."""

from __future__ import annotations

import sys

import tyro

from dacer2.config import TrainConfig


def _user_errors() -> tuple[type[Exception], ...]:
    """Failures a user can act on: one line on stderr, no traceback. Imported when first needed: the modules that
    define them import torch and Gymnasium, which --help must not wait for."""
    from dacer2.envs import EnvError
    from dacer2.train.checkpoint import CheckpointError

    return (ValueError, EnvError, CheckpointError)


def __getattr__(name: str):
    # USER_ERRORS stays a module attribute (`from dacer2.cli.train import USER_ERRORS`), computed on first access.
    if name == "USER_ERRORS":
        return _user_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train_main(argv: list[str] | None = None) -> int:
    config = tyro.cli(TrainConfig, args=argv, prog="dacer2-train")
    # After parsing, so that --help imports neither torch nor Gymnasium:
    from dacer2.train.checkpoint import CheckpointWriteError
    from dacer2.train.phase_times import describe
    from dacer2.train.trainer import NonFiniteError, TrainingInterrupted, train

    user_errors = _user_errors()
    try:
        result = train(config)
    except user_errors as exc:
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
    final = (f"final eval return {result.final_eval_mean:.1f} +- {result.final_eval_std:.1f}" if result.eval_history
             else "no evaluation (--eval-episodes 0)")
    print(f"{final} after {result.env_steps} env steps ({result.iterations} iterations), {result.updates} updates, "
          f"{result.wall_time:.0f} s; run dir: {result.run_dir}")
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
