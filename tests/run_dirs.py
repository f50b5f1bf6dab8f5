"""Fake run directories (config.json, metrics.csv, optionally policy.json) for the tests of the readers of runs:
dacer2-plot's (tests/cli/test_plot.py) and the results page's (tests/test_results_page.py)."""

import csv
import json


def fake_run(root, name, env_id, algo, seed, returns, step=1000, policy_family=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env_id": env_id, "algo": algo, "seed": seed}))
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_steps", "updates", "episodic_return", "eval_return_mean", "eval_return_std"])
        for i, ret in enumerate(returns, start=1):
            writer.writerow([i * step - step // 2, i, ret - 5, "", ""])  # a training-only row between evals
            writer.writerow([i * step, i, ret - 5, ret, 1.0])
    if policy_family:
        (run / "policy.json").write_text(json.dumps({"policy_family": policy_family}))
    return run
