"""Sweeps: the grid algos x env ids x seeds of ordinary training runs, fanned out by Ray Tune.

Each trial is one `train(config)` that writes a normal run directory under <sweep dir>/runs/, so dacer2-plot and
dacer2-eval work on sweep output, and Tune sees every evaluation as it happens. Ray is an optional extra
(from a clone: `make install-ray`, or `pip install --no-build-isolation -e '.[ray]'`); only `run_sweep` imports it.

The sweep directory is the sweep's identity. Running the same sweep into the same directory restores Tune's
experiment (Tuner.restore): finished trials are kept; interrupted and failed ones start again and continue their
run directory from its newest checkpoint instead of from step 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from dacer2.config import Algo, TrainConfig, Unset
from dacer2.analysis.runs import run_name

SWEEP_AXES = ("algo", "env_id", "seed")
# Set per trial by the sweep itself; a user override of these would make trials collide or misreport.
NOT_OVERRIDABLE = (*SWEEP_AXES, "run_dir", "resume")
EXPERIMENT_NAME = "tune"  # Tune's experiment folder inside the sweep directory
SPEC_FILE = "sweep.json"
SUMMARY_NAME = "results"  # results.md, results.png, results_runs.csv, results_summary.csv


class SweepError(ValueError):
    """The sweep cannot start as asked (bad grid, bad override, a different sweep already in the directory)."""


@dataclass
class SweepConfig:
    """Run the grid --algos x --env-ids x --seeds of dacer2-train runs on Ray Tune: a local Ray instance by default,
    an existing cluster with --address. Every other option is a dacer2-train option applied to all trials (for
    example --total-steps 20000 --eta 0.1; see dacer2-train --help). Re-running the same command continues the
    sweep: finished trials are kept, interrupted or failed ones resume from their checkpoints."""

    algos: tuple[Algo, ...] = ("dacer2",)
    """Algorithm presets to compare: the diffusion presets (dacer2, dacer, dacer2-no-weight, dacer2-no-qgrad) and the
Gaussian SAC-style baseline (gaussian); see dacer2-train --help."""
    env_ids: tuple[str, ...] = ("InvertedPendulum-v5",)
    """Gymnasium task ids, e.g. Hopper-v5 Walker2d-v5 HalfCheetah-v5."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; every (algo, env) pair runs once per seed."""
    out_dir: Unset[str] = None
    """Sweep directory: runs/ (one run directory per trial), tune/ (Tune's state), results.md/.png/.csv (default:
sweeps/sweep-<hash of grid and options>, so the same command finds the same sweep). On a multi-node cluster it must be
storage every node sees (NFS or similar)."""
    cpus_per_trial: float = 1.0
    """CPUs Ray reserves per trial; each trial's torch uses this many threads (rounded up) unless --torch-threads is
given. Trials run concurrently as far as the cluster's CPUs allow."""
    gpus_per_trial: float = 0.0
    """GPUs Ray reserves per trial; fractions pack several trials on one GPU (0.25: four per GPU)."""
    address: Unset[str] = None
    """Ray cluster to join (e.g. auto, or ray://head:10001; default: start a local Ray instance on this machine)."""
    num_cpus: Unset[int] = None
    """CPUs the local Ray instance may use (default: all of this machine's); ignored with --address."""
    max_concurrent_trials: Unset[int] = None
    """Upper bound on trials running at once (default: as many as the resources allow)."""
    max_failures: int = 1
    """Times Tune restarts a failed trial within this sweep (each restart resumes from its checkpoint)."""


@dataclass
class SweepResult:
    out_dir: Path
    run_dirs: list[Path]  # one per trial, in grid order
    finished: list[Path]  # the run directories whose training completed
    errors: list[str] = field(default_factory=list)  # one line per failed trial
    summary: str = ""  # markdown table: final return mean +- std per algo and env, then per run
    report_files: list[Path] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.finished) == len(self.run_dirs)


# ---------------------------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------------------------
def grid(config: SweepConfig) -> list[dict]:
    return [dict(algo=a, env_id=e, seed=s) for e in config.env_ids for a in config.algos for s in config.seeds]


def check_overrides(overrides: Mapping[str, Any]) -> dict:
    fixed = sorted(set(overrides) & set(NOT_OVERRIDABLE))
    if fixed:
        raise SweepError(f"{', '.join(fixed)} cannot be overridden in a sweep; the grid (--algos, --env-ids, --seeds) "
                         "and the sweep directory set them per trial")
    try:
        TrainConfig.from_dict(dict(overrides))
    except (TypeError, ValueError) as exc:
        raise SweepError(f"bad trial option: {exc}") from None
    return json.loads(json.dumps(dict(overrides)))  # tuples -> lists: the form sweep.json stores


def check_grid(config: SweepConfig, overrides: Mapping[str, Any]) -> None:
    """Fail before Ray starts: an empty or duplicated axis, bad resources, a config or env that cannot train."""
    from dacer2.envs import make_vector_env

    for name, values in (("--algos", config.algos), ("--env-ids", config.env_ids), ("--seeds", config.seeds)):
        if not values:
            raise SweepError(f"{name} needs at least one value")
        if len(set(values)) != len(values):
            raise SweepError(f"{name} lists a value twice: {list(values)}")
    if config.cpus_per_trial <= 0 or config.gpus_per_trial < 0:
        raise SweepError("--cpus-per-trial must be positive and --gpus-per-trial >= 0")
    if config.max_failures < 0:
        raise SweepError("--max-failures must be >= 0")
    if config.address is None and (config.gpus_per_trial > 0 or overrides.get("device") == "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SweepError("--gpus-per-trial > 0 or --device cuda, but this machine has no CUDA GPU for the local "
                             "Ray instance")
    for point in grid(config):
        trial_config({"overrides": overrides, "runs_root": ".", **point}).resolved()  # raises ValueError on bad values
    for env_id in config.env_ids:
        make_vector_env(env_id, 1, 0).close()  # unknown id, discrete or unbounded actions: EnvError


def with_resource_defaults(config: SweepConfig, overrides: Mapping[str, Any]) -> dict:
    """The trial options that follow from what Ray reserves per trial, unless the user gave them: torch threads =
    reserved CPUs (more threads than CPUs oversubscribes the cores), and the GPU only when one is reserved."""
    values = dict(overrides)
    if config.cpus_per_trial > 0:
        values.setdefault("torch_threads", math.ceil(config.cpus_per_trial))
    values.setdefault("device", "cuda" if config.gpus_per_trial > 0 else "cpu")
    return values


def sweep_spec(config: SweepConfig, overrides: Mapping[str, Any]) -> dict:
    """What identifies a sweep: its grid and the user's trial options, not the resources or the cluster it runs on
    (a restart may name other ones; Tune keeps the resources of the first start)."""
    return {"algos": list(config.algos), "env_ids": list(config.env_ids), "seeds": list(config.seeds),
            "overrides": check_overrides(overrides)}


def default_out_dir(spec: dict) -> Path:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return Path("sweeps") / f"sweep-{digest}"


def claim_out_dir(out_dir: Path, spec: dict) -> bool:
    """Record the spec in out_dir, or check that the sweep already there is this one. True if it was already there."""
    spec_path = out_dir / SPEC_FILE
    if spec_path.is_file():
        saved = json.loads(spec_path.read_text())
        if saved != spec:
            raise SweepError(f"{out_dir} holds a different sweep ({spec_path}: {json.dumps(saved)}); "
                             "choose another --out-dir to start a new one")
        return True
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    return False


# ---------------------------------------------------------------------------------------------------------------
# One trial (runs inside a Ray worker; plain Python, so tests can call it directly)
# ---------------------------------------------------------------------------------------------------------------
def trial_config(params: Mapping[str, Any]) -> TrainConfig:
    """params: the trial's point on the grid (algo, env_id, seed), the shared overrides and runs_root."""
    run_dir = Path(params["runs_root"]) / run_name(params["env_id"], params["algo"], params["seed"])
    values = {**params["overrides"], **{k: params[k] for k in SWEEP_AXES}, "run_dir": str(run_dir), "progress": False}
    return TrainConfig.from_dict(values)


def run_trial(params: Mapping[str, Any], report: Callable[[dict], None]) -> None:
    """Train one grid point, or continue it: a run directory with a checkpoint resumes, a finished one only
    reports its last evaluation again, one without a checkpoint (killed before its first) starts over."""
    from dacer2.train.checkpoint import CheckpointManager
    from dacer2.train.trainer import train

    cfg = trial_config(params)
    run_dir = Path(cfg.run_dir)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        steps, mean, std = done["eval_history"][-1] if done["eval_history"] else (done["env_steps"], math.nan, math.nan)
        report({"env_steps": steps, "updates": done["updates"], "wall_time": done["wall_time"],
                "eval_return_mean": mean, "eval_return_std": std})
        return
    if CheckpointManager(run_dir / "checkpoints").saved():
        cfg = TrainConfig(resume=str(run_dir), total_steps=cfg.total_steps, progress=False,
                          torch_threads=cfg.torch_threads)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # logs of an attempt that never reached a checkpoint: nothing to continue from
    train(cfg, on_eval=report)


def _tune_trial(params: dict) -> None:
    from ray import tune

    run_trial(params, tune.report)


def _trial_dirname(trial) -> str:
    return run_name(trial.config["env_id"], trial.config["algo"], trial.config["seed"])


# ---------------------------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------------------------
def run_sweep(config: SweepConfig, overrides: Optional[Mapping[str, Any]] = None) -> SweepResult:
    """Run (or continue) the sweep and summarise it. `overrides` are TrainConfig fields applied to every trial."""
    spec = sweep_spec(config, overrides or {})
    trial_options = with_resource_defaults(config, spec["overrides"])
    check_grid(config, trial_options)
    try:
        import ray
        from ray import tune
    except ImportError:
        raise SweepError("sweeps need Ray Tune: install the ray extra from the dacer2 clone: make install-ray, or "
                         "pip install --no-build-isolation -e '.[ray]'") from None

    out_dir = Path(config.out_dir or default_out_dir(spec)).resolve()  # Ray workers run in other directories
    restarting = claim_out_dir(out_dir, spec)
    runs_root = out_dir / "runs"
    experiment = out_dir / EXPERIMENT_NAME
    trainable = tune.with_resources(_tune_trial, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home unless the user opts in
    if config.address is None:
        # address="local": always a new instance of our own; a bare ray.init() would join a Ray already running on
        # this machine (another sweep, a user's cluster) and queue our trials behind its work.
        ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, configure_logging=False)
    else:
        try:
            ray.init(address=config.address)
        except ConnectionError as exc:  # e.g. --address auto with no cluster running on this node
            raise SweepError(
                f"cannot join the Ray cluster at {config.address!r}: {exc}. If the cluster uses token authentication "
                "(Ray's default), set RAY_AUTH_MODE=token and give this node the cluster's token (~/.ray/auth_token "
                "or RAY_AUTH_TOKEN)") from None
    try:
        if restarting and tune.Tuner.can_restore(str(experiment)):
            print(f"dacer2-sweep: continuing the sweep in {out_dir}", flush=True)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
        else:
            param_space = {
                "algo": tune.grid_search(list(config.algos)),
                "env_id": tune.grid_search(list(config.env_ids)),
                "seed": tune.grid_search(list(config.seeds)),
                "overrides": trial_options,
                "runs_root": str(runs_root),
            }
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(max_concurrent_trials=config.max_concurrent_trials,
                                            trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT_NAME, storage_path=str(out_dir), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=config.max_failures)),
            )
        results = tuner.fit()
        errors = [f"{_trial_dirname(r)}: {_last_line(r.error)}" for r in results if r.error is not None]
    finally:
        ray.shutdown()
    return summarize(out_dir, [runs_root / run_name(**p) for p in grid(config)], errors)


def summarize(out_dir: Path, run_dirs: list[Path], errors: list[str]) -> SweepResult:
    """The aggregate table and learning curves over the trials that have evaluations."""
    from dacer2.analysis.plotting import write_report
    from dacer2.analysis.runs import RunError, load_run

    runs = []
    for run_dir in run_dirs:
        try:
            run = load_run(run_dir)
        except RunError:
            continue
        if run.eval_steps.size:
            runs.append(run)
    finished = [d for d in run_dirs if (d / "result.json").is_file()]
    result = SweepResult(out_dir, run_dirs, finished, errors)
    if runs:
        result.summary, result.report_files = write_report(runs, out_dir, SUMMARY_NAME, title=out_dir.name)
    return result


def _last_line(error: BaseException) -> str:
    """Ray wraps a trial's exception in a long traceback; its last line names the cause."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
