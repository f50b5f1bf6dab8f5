"""Sweeps (issue 7): the grid, trial resume logic and the CLI without Ray, then real sweeps on a local Ray instance."""

import contextlib
import csv
import dataclasses
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dacer2.train.checkpoint import CheckpointManager
from dacer2.envs import EnvError
from dacer2.cli.plot import plot_main
from dacer2.train.sweep import (SweepConfig, SweepError, check_grid, claim_out_dir, default_out_dir, grid, run_trial,
                          sweep_spec, with_resource_defaults)
from dacer2.cli.sweep import trial_overrides

# Trial options that make one run take seconds; as CLI flags for the subprocess sweeps.
TINY_TRIAL_ARGS = ["--actor-hidden", "16", "16", "--critic-hidden", "16", "16", "--batch-size", "32",
                   "--entropy-states", "4", "--entropy-samples", "20", "--eval-episodes", "2"]


def tiny_overrides(**extra):
    return {**trial_overrides(TINY_TRIAL_ARGS), "deterministic": True, "save_buffer": True, "backend": "reference",
            **extra}


def eval_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(r["env_steps"]) for r in csv.DictReader(f) if r["eval_return_mean"]]


def metric_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_time", "sps")} for row in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------------------------
# Grid, options, sweep identity (no Ray needed)
# ---------------------------------------------------------------------------------------------------------------
def test_grid_is_every_algo_env_seed_combination():
    points = grid(SweepConfig(algos=("dacer2", "dacer"), env_ids=("A", "B"), seeds=(0, 1, 2)))
    assert len(points) == 12 and len({tuple(p.values()) for p in points}) == 12
    assert {p["algo"] for p in points} == {"dacer2", "dacer"} and {p["seed"] for p in points} == {0, 1, 2}


def test_cli_trial_options_become_overrides_and_grid_fields_are_refused():
    assert trial_overrides(["--total-steps", "300", "--eta", "0.5", "--actor-hidden", "8", "8"]) == {
        "total_steps": 300, "eta": 0.5, "actor_hidden": (8, 8)}
    assert trial_overrides([]) == {}
    for flag in (["--seed", "3"], ["--env-id=Hopper-v5"], ["--algo", "dacer"], ["--run-dir", "x"], ["--resume", "x"]):
        with pytest.raises(SweepError, match="set per trial by the sweep"):
            trial_overrides(flag)
    with pytest.raises(SweepError, match="--overwrite does not apply to sweeps"):
        trial_overrides(["--overwrite"])
    # The papers' protocol is a trial option like any other.
    assert trial_overrides(["--protocol", "papers"]) == {"protocol": "papers"}


def test_trials_use_the_threads_and_device_ray_reserves_unless_told_otherwise():
    assert with_resource_defaults(SweepConfig(cpus_per_trial=1.5), {}) == {"torch_threads": 2, "device": "cpu"}
    assert with_resource_defaults(SweepConfig(gpus_per_trial=0.25), {})["device"] == "cuda"
    given = {"torch_threads": 4, "device": "cpu", "eta": 0.1}
    assert with_resource_defaults(SweepConfig(cpus_per_trial=1, gpus_per_trial=0.5), given) == given


def test_bad_grids_fail_before_ray_starts():
    with pytest.raises(SweepError, match="cannot be overridden"):
        sweep_spec(SweepConfig(), {"seed": 1})
    with pytest.raises(SweepError, match="unknown config keys"):
        sweep_spec(SweepConfig(), {"total_stepz": 1})
    with pytest.raises(SweepError, match="lists a value twice"):
        check_grid(SweepConfig(seeds=(0, 0)), {})
    with pytest.raises(SweepError, match="at least one"):
        check_grid(SweepConfig(algos=()), {})
    if not torch.cuda.is_available():
        for config, options in ((SweepConfig(gpus_per_trial=0.5), {}), (SweepConfig(), {"device": "cuda"})):
            with pytest.raises(SweepError, match="no CUDA GPU"):
                check_grid(config, options)
    with pytest.raises(ValueError, match="--total-steps must be positive"):
        check_grid(SweepConfig(), {"total_steps": -5})
    with pytest.raises(EnvError, match="unknown environment id"):
        check_grid(SweepConfig(env_ids=("InvertedPendulum-v5", "NoSuchEnv-v0")), {})
    with pytest.raises(EnvError, match="continuous Box action space"):
        check_grid(SweepConfig(env_ids=("CartPole-v1",)), {})


def test_the_same_sweep_maps_to_the_same_directory_and_a_different_one_is_refused(tmp_path):
    spec = sweep_spec(SweepConfig(algos=("dacer2", "dacer"), seeds=(0, 1)), {"total_steps": 300})
    assert default_out_dir(spec) == default_out_dir(json.loads(json.dumps(spec)))
    assert default_out_dir(spec) != default_out_dir(sweep_spec(SweepConfig(seeds=(0, 1)), {"total_steps": 300}))
    assert claim_out_dir(tmp_path / "s", spec) is False
    assert claim_out_dir(tmp_path / "s", spec) is True
    other = sweep_spec(SweepConfig(algos=("dacer2", "dacer"), seeds=(0, 1)), {"total_steps": 500})
    with pytest.raises(SweepError, match="holds a different sweep"):
        claim_out_dir(tmp_path / "s", other)


def test_without_ray_the_package_works_and_the_sweep_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # makes `import ray` fail as if it were not installed
            "import dacer2.cli.train, dacer2.train.trainer\n"
            "from dacer2.cli.sweep import sweep_main\n"
            f"sys.exit(sweep_main(['--out-dir', {str(tmp_path / 's')!r}, '--total-steps', '300']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    # dacer2 is not on a package index: the hint installs the extra from the clone, with commands that work there
    assert "make install-ray, or pip install --no-build-isolation -e '.[ray]'" in proc.stderr
    assert "dacer2[ray]" not in proc.stderr


def run_sweep_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dacer2.cli.sweep", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_sweep_help_explains_every_option_and_where_trial_options_come_from(tmp_path):
    proc = run_sweep_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for field in dataclasses.fields(SweepConfig):
        assert "--" + field.name.replace("_", "-") in proc.stdout, field.name
    assert "dacer2-train option" in proc.stdout and "continues the sweep" in proc.stdout


def test_sweep_bad_input_is_one_line_before_ray_starts(tmp_path):
    proc = run_sweep_cli("--env-ids", "Hoper-v5", "--total-steps", "300", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dacer2-sweep: error: unknown environment id 'Hoper-v5'; did you mean")
    proc = run_sweep_cli("--seed", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "use --algos, --env-ids and --seeds" in proc.stderr
    proc = run_sweep_cli("--total-stepz", "5", cwd=tmp_path)
    assert proc.returncode == 2 and "--total-stepz" in proc.stderr
    assert not (tmp_path / "sweeps").exists()  # nothing written


# ---------------------------------------------------------------------------------------------------------------
# One trial: start, resume, already finished (called directly, with a list standing in for tune.report)
# ---------------------------------------------------------------------------------------------------------------
def trial_params(runs_root: Path, **overrides) -> dict:
    return {"algo": "dacer2", "env_id": "InvertedPendulum-v5", "seed": 0, "runs_root": str(runs_root),
            "overrides": tiny_overrides(total_steps=400, eval_every=100, log_every=100, learning_starts=100,
                                        checkpoint_every=200, **overrides)}


def test_a_trial_reports_every_evaluation_and_writes_a_normal_run_directory(tmp_path):
    reports = []
    run_trial(trial_params(tmp_path), reports.append)
    run_dir = tmp_path / "InvertedPendulum-v5__dacer2__0"
    assert [r["env_steps"] for r in reports] == [0, 100, 200, 300, 400] == eval_steps(run_dir)
    assert all({"eval_return_mean", "eval_return_std", "updates"} <= set(r) for r in reports)
    assert (run_dir / "result.json").is_file() and (run_dir / "checkpoints" / "final.pt").is_file()


def test_an_interrupted_trial_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(tmp_path):
    run_trial(trial_params(tmp_path / "straight"), lambda r: None)
    run_trial(trial_params(tmp_path / "cut"), lambda r: None)
    cut = tmp_path / "cut" / "InvertedPendulum-v5__dacer2__0"
    # As if the worker died just before the step-400 checkpoint: no result, newest checkpoint at step 200.
    for name in ("result.json", "checkpoints/final.pt", "checkpoints/step_000000000400.pt"):
        (cut / name).unlink()
    reports = []
    run_trial(trial_params(tmp_path / "cut"), reports.append)
    assert [r["env_steps"] for r in reports] == [300, 400]  # continued, not restarted from step 0
    assert metric_rows(cut) == metric_rows(tmp_path / "straight" / "InvertedPendulum-v5__dacer2__0")


def test_a_finished_trial_is_not_trained_again_and_one_without_checkpoint_starts_over(tmp_path):
    run_trial(trial_params(tmp_path), lambda r: None)
    run_dir = tmp_path / "InvertedPendulum-v5__dacer2__0"
    before = (run_dir / "metrics.csv").read_text()
    reports = []
    run_trial(trial_params(tmp_path), reports.append)
    assert (run_dir / "metrics.csv").read_text() == before
    assert len(reports) == 1 and reports[0]["env_steps"] == 400

    (run_dir / "result.json").unlink()
    for path in CheckpointManager(run_dir / "checkpoints").saved():
        path.unlink()
    (run_dir / "metrics.csv").write_text("env_steps\n123456\n")  # logs of an attempt killed before any checkpoint
    run_trial(trial_params(tmp_path), lambda r: None)
    assert eval_steps(run_dir) == [0, 100, 200, 300, 400]


# ---------------------------------------------------------------------------------------------------------------
# Real sweeps on a local Ray instance (each starts Ray: about half a minute)
# ---------------------------------------------------------------------------------------------------------------
# Ray is an optional extra: without it these tests skip and say so (make test installs it).
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed: make install-ray (make test installs it)")


def processes_of_cluster(port: int) -> list[int]:
    """PIDs of the Ray processes that belong to the cluster whose GCS listens on `port` (their command lines name
    it), so a test stops its own cluster and never a Ray a user runs on the same machine."""
    needles = (f":{port}".encode(), f"port={port}".encode())
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit() and int(proc_dir.name) != os.getpid():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes()
                state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and any(n in cmdline for n in needles):  # a zombie has exited already
                pids.append(int(proc_dir.name))
    return pids


def stop_cluster(port: int, timeout: float = 60.0) -> None:
    for pid in processes_of_cluster(port):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while processes_of_cluster(port) and time.time() < deadline:
        time.sleep(0.5)
    for pid in processes_of_cluster(port):  # whatever ignored SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while processes_of_cluster(port) and time.time() < deadline:
        time.sleep(0.2)


def sweep_command(out_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dacer2.cli.sweep", "--env-ids", "InvertedPendulum-v5", "--out-dir", str(out_dir),
            *TINY_TRIAL_ARGS, *args]


@needs_ray
def test_tiny_sweep_writes_four_run_directories_tune_results_and_the_table(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run(sweep_command(out, "--algos", "dacer2", "dacer", "--seeds", "0", "1", "--total-steps", "300",
                                        "--eval-every", "150", "--checkpoint-every", "150"),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dirs = sorted(p.name for p in (out / "runs").iterdir())
    assert run_dirs == sorted(f"InvertedPendulum-v5__{a}__{s}" for a in ("dacer2", "dacer") for s in (0, 1))
    for name in run_dirs:
        assert eval_steps(out / "runs" / name) == [0, 150, 300]
        assert (out / "runs" / name / "checkpoints" / "final.pt").is_file()
        # Tune received the same evaluations as the trial logged.
        with open(out / "tune" / name / "progress.csv") as f:
            assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [0, 150, 300]
    for algo in ("dacer2", "dacer"):
        assert f"| InvertedPendulum-v5 | {algo} | 2 |" in proc.stdout
    assert (out / "results.md").read_text() in proc.stdout
    with open(out / "results_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["algo"], r["seeds"]) for r in rows] == [("dacer2", "2"), ("dacer", "2")]
    assert "4/4 runs finished" in proc.stdout
    assert plot_main([str(out / "runs"), "--out-dir", str(tmp_path / "plots")]) == 0  # sweep output is ordinary runs
    assert (tmp_path / "plots" / "learning_curves.png").is_file()


@needs_ray
def test_an_interrupted_sweep_finishes_the_rest_on_restart(tmp_path):
    out = tmp_path / "sweep"
    command = sweep_command(out, "--algos", "dacer2", "--seeds", "0", "1", "--total-steps", "3000",
                            "--eval-every", "1000", "--checkpoint-every", "300", "--max-concurrent-trials", "1")
    first, second = (out / "runs" / f"InvertedPendulum-v5__dacer2__{s}" for s in (0, 1))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    deadline = time.time() + 300
    running, finished = None, None
    while time.time() < deadline and proc.poll() is None:
        done = [d for d in (first, second) if (d / "result.json").is_file()]
        started = [d for d in (first, second) if d not in done and CheckpointManager(d / "checkpoints").saved()]
        if done and started:
            finished, running = done[0], started[0]
            break
        time.sleep(0.1)
    assert finished is not None, "the sweep never reached: one trial finished, the other checkpointed"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in the terminal reaches the whole process group
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, output[-3000:]
    assert "run the same command again" in output
    finished_log = (finished / "metrics.csv").read_text()
    assert not (running / "result.json").is_file()
    interrupted_at = max(int(p.stem.split("_")[1]) for p in CheckpointManager(running / "checkpoints").saved())
    assert interrupted_at < 3000

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    combined = again.stdout + again.stderr
    assert "continuing the sweep" in combined
    assert f"resumed {running}" in combined  # from its checkpoint, not from step 0
    assert (finished / "metrics.csv").read_text() == finished_log  # the finished trial did not run again
    assert eval_steps(running) == [0, 1000, 2000, 3000]
    assert "2/2 runs finished" in again.stdout and "| InvertedPendulum-v5 | dacer2 | 2 |" in again.stdout


@needs_ray
def test_a_sweep_joins_an_existing_ray_cluster_with_address(tmp_path):
    ray_cli = str(Path(sys.executable).parent / "ray")
    # As the docs tell cluster users: one token, given to the head and to the driver (Ray's token authentication).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with socket.socket() as probe:  # a free port for the head's GCS
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1",
                           "--include-dashboard=false", "--disable-usage-stats"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        out = tmp_path / "sweep"
        proc = subprocess.run(sweep_command(out, "--address", f"127.0.0.1:{port}", "--algos", "dacer2", "--seeds", "3",
                                            "--total-steps", "200", "--eval-every", "200"),
                              capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env=env)
        # Without --address a sweep starts its own instance even while another Ray runs on the machine (joining
        # it would queue the trials behind that cluster's work, or hang when its CPUs are busy).
        local = subprocess.run(sweep_command(tmp_path / "local", "--algos", "dacer2", "--seeds", "4", "--total-steps",
                                             "200", "--eval-every", "200", "--num-cpus", "1"),
                               capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    finally:
        stop_cluster(port)  # only the head started here: `ray stop` would also stop any other Ray on the machine
    assert not processes_of_cluster(port)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Connecting to existing Ray cluster" in proc.stdout + proc.stderr
    assert eval_steps(out / "runs" / "InvertedPendulum-v5__dacer2__3") == [0, 200]
    assert "| InvertedPendulum-v5 | dacer2 | 1 |" in proc.stdout
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    assert "Connecting to existing Ray cluster" not in local.stdout + local.stderr
    assert eval_steps(tmp_path / "local" / "runs" / "InvertedPendulum-v5__dacer2__4") == [0, 200]
