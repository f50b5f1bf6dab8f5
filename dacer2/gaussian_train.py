"""Training entry point of the Gaussian comparison policy (dacer2/gaussian.py): the unchanged DACER2 training
loop with GaussianAgent in place of DACER2Agent.

The agent is swapped through train()'s agent_factory; checkpoints record the agent's `policy_family`, and the run
directory gets a marker file, so `Policy.load`, `dacer2-eval` and `dacer2-plot` know what they hold.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import tyro

from dacer2.config import TrainConfig
from dacer2.gaussian import POLICY_FAMILY
from dacer2.gaussian_agent import GaussianAgent

POLICY_MARKER = "policy.json"  # {"policy_family": ...} in a run directory; absent = the diffusion policy


def train_gaussian(config: TrainConfig):
    from dacer2.trainer import train

    # eta = 0 and the reference backend up front so config.json and the checkpoint say what the agent does.
    cfg = dataclasses.replace(config, eta=0.0, backend="reference")
    if cfg.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.run_dir = str(Path("runs") / f"{cfg.env_id.replace('/', '-')}__{POLICY_FAMILY}__{cfg.seed}__{stamp}")
    result = train(cfg, agent_factory=GaussianAgent)
    (Path(result.run_dir) / POLICY_MARKER).write_text(json.dumps({"policy_family": POLICY_FAMILY}) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """Train the Gaussian-policy comparison agent (same options as dacer2-train)."""
    config = tyro.cli(TrainConfig, args=argv, description=main.__doc__)
    from dacer2.cli import USER_ERRORS

    try:
        result = train_gaussian(config)
    except USER_ERRORS as exc:
        print(f"dacer2-train-gaussian: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"final eval return {result.final_eval_mean:.1f} +- {result.final_eval_std:.1f} "
        f"after {result.env_steps} env steps; run dir: {result.run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
