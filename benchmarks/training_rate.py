"""Training throughput after warm-up, as a user's dacer2-train run sees it: env steps/s with 1 env and 1 update per
step, iterations/s of the papers' protocol (20 envs stepped, then 1 update; sync, and async with the envs stepping
during the update), and N runs sharing one device.

    python benchmarks/training_rate.py --device cuda [--cuda-graphs on|off] [--shared 4] [--out FILE.md]

Each configuration is a real `dacer2-train` process (HalfCheetah-v5 unless --env-id, dacer2 preset) writing a log row every
--log-every env steps; the rate is measured between the first row after learning starts plus one interval (so
warm-up, Triton compiles and graph captures are excluded) and the last row. Prints a markdown table with the
device and host, and appends it to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dacer2.train.phase_times import describe



def _command(run_dir: Path, env_id: str, device: str, graphs: str, num_envs: int, vector_env: str,
             iterations: int, learning_starts: int) -> list[str]:
    total = num_envs * iterations
    return [sys.executable, "-m", "dacer2.cli.train", "--env-id", env_id, "--device", device, "--cuda-graphs", graphs,
            "--num-envs", str(num_envs), "--vector-env", vector_env, "--total-steps", str(total), "--learning-starts", str(learning_starts),
            "--eval-episodes", "0", "--log-every", str(num_envs * max(1, iterations // 20)),
            "--checkpoint-every", str(10 * total), "--no-progress", "--seed", "0", "--run-dir", str(run_dir)]


def _rate(run_dir: Path, learning_starts: int) -> tuple[float, str]:
    """Env steps per second between the second log row past learning_starts and the last row, and where the whole
    run's time went (the trainer's phase clock, warm-up included)."""
    with open(run_dir / "metrics.csv") as f:
        rows = [(int(r["env_steps"]), float(r["wall_time"])) for r in csv.DictReader(f)]
    trained = [r for r in rows if r[0] > learning_starts]
    if len(trained) < 3:
        raise RuntimeError(f"{run_dir}: too few log rows after learning starts to measure a rate")
    (s0, t0), (s1, t1) = trained[1], trained[-1]
    result = json.loads((run_dir / "result.json").read_text())
    return (s1 - s0) / (t1 - t0), f"{describe(result['time_breakdown'])}; CUDA graphs {result['cuda_graphs']}"


def measure(env_id: str, device: str, graphs: str, num_envs: int, iterations: int, processes: int = 1,
            vector_env: str = "sync") -> list[tuple[float, str]]:
    learning_starts = max(256, num_envs * 100)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"run{i}" for i in range(processes)]
        procs = [subprocess.Popen(_command(d, env_id, device, graphs, num_envs, vector_env, iterations, learning_starts),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dirs]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"dacer2-train failed (rc {proc.returncode}):\n{err[-2000:]}")
        return [_rate(d, learning_starts) for d in dirs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--iterations", type=int, default=6000, help="loop iterations per run (env steps / envs)")
    parser.add_argument("--shared", type=int, default=4, help="concurrent 1-env runs sharing the device (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args(argv)

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    lines = [f"### Training rate, {args.env_id}, dacer2 preset, {name}, --cuda-graphs {args.cuda_graphs} "
             f"({time.strftime('%Y-%m-%d')})", "",
             "| configuration | env steps/s | iterations/s (envs stepped + 1 update) | where the time went |",
             "|---|---|---|---|"]
    for num_envs, vector_env in ((1, "sync"), (20, "sync"), (20, "async")):
        ((rate, split),) = measure(args.env_id, args.device, args.cuda_graphs, num_envs, args.iterations,
                                   vector_env=vector_env)
        during = ", stepping during the update" if vector_env == "async" else ""
        envs = "1 env" if num_envs == 1 else f"{num_envs} envs ({vector_env}{during})"
        lines.append(f"| {envs}, 1 update per iteration | {rate:,.0f} | {rate / num_envs:,.0f} | {split} |")
        print(lines[-1], flush=True)
    if args.shared:
        rates = [rate for rate, _ in measure(args.env_id, args.device, args.cuda_graphs, 1, args.iterations,
                                             processes=args.shared)]
        lines.append(f"| {args.shared} runs of 1 env sharing the device (total) | {sum(rates):,.0f} | "
                     f"{sum(rates):,.0f} (each {min(rates):,.0f}-{max(rates):,.0f}) | |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
