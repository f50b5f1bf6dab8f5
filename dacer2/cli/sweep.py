"""dacer2-sweep: the command-line face of dacer2.train.sweep.run_sweep. Sweep options are parsed here; every other
option is parsed as a dacer2-train option and becomes an override for all trials."""

from __future__ import annotations

import dataclasses
import sys

import tyro

from dacer2.config import TrainConfig
from dacer2.train.sweep import NOT_OVERRIDABLE, SweepConfig, SweepError


def trial_overrides(args: list[str]) -> dict:
    """The dacer2-train options given in args, as TrainConfig field values (tyro parses and checks them)."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name[2:].replace("-", "_") in NOT_OVERRIDABLE:
            raise SweepError(f"{name} is set per trial by the sweep; use --algos, --env-ids and --seeds for the grid")
        if name == "--overwrite":  # a sweep continues its trials; starting one over means removing its folder
            raise SweepError("--overwrite does not apply to sweeps: a re-run continues every trial from its "
                             "checkpoints; delete a trial's run directory to start it over")
    parsed = tyro.cli(TrainConfig, args=args, prog="dacer2-sweep [sweep options]")
    defaults = TrainConfig()
    return {f.name: getattr(parsed, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(parsed, f.name) != getattr(defaults, f.name)}


def sweep_main(argv: list[str] | None = None) -> int:
    config, rest = tyro.cli(SweepConfig, args=argv, return_unknown_args=True, prog="dacer2-sweep",
                            config=(tyro.conf.DisallowNone,))  # --help: STR, not {None}|STR
    from dacer2.cli.train import USER_ERRORS
    from dacer2.train.sweep import run_sweep

    try:
        result = run_sweep(config, trial_overrides(rest))
    except USER_ERRORS as exc:  # SweepError is a ValueError too
        print(f"dacer2-sweep: error: {exc}", file=sys.stderr)
        return 2
    if result.summary:
        print(result.summary)
    print(f"sweep directory: {result.out_dir} ({len(result.finished)}/{len(result.run_dirs)} runs finished)")
    if result.report_files:
        print("wrote " + ", ".join(map(str, result.report_files)))
    for line in result.errors:
        print(f"dacer2-sweep: failed trial {line}", file=sys.stderr)
    if not result.complete:
        print("dacer2-sweep: not every trial finished; run the same command again to continue from the checkpoints",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(sweep_main())
