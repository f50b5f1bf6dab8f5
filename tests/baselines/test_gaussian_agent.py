"""--algo gaussian, the SAC-style baseline: the trainer builds a GaussianAgent, its run loads as a Gaussian policy,
and a resume rebuilds the same agent from the saved config."""

import json

from dacer2.baselines.gaussian_agent import GaussianAgent
from dacer2.config import TrainConfig
from dacer2.policy import Policy
from dacer2.trainer import agent_class, train


def test_algo_gaussian_trains_and_resumes_the_gaussian_agent(tmp_path, tiny_config):
    run = tmp_path / "gauss"
    first = train(tiny_config(algo="gaussian", total_steps=200, learning_starts=100, eval_every=100, eval_episodes=1,
                              alpha_every=100, run_dir=str(run)))
    assert json.loads((run / "config.json").read_text())["algo"] == "gaussian"
    assert Policy.load(run).info.policy_family == "gaussian"
    # Resuming builds the agent from the saved config: a DACER2Agent could not load the Gaussian actor's weights.
    assert agent_class(TrainConfig.from_dict(json.loads((run / "config.json").read_text()))) is GaussianAgent
    resumed = train(TrainConfig(resume=str(run), total_steps=300))
    assert resumed.env_steps == 300 > first.env_steps and Policy.load(run).info.policy_family == "gaussian"
