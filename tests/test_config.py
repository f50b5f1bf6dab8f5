import pytest

from dacer2.config import TrainConfig


def test_algo_presets():
    d2 = TrainConfig(algo="dacer2", env_id="Hopper-v5").resolved()
    assert (d2.diffusion_steps, d2.temporal_weighting) == (5, True) and d2.eta > 0
    dacer = TrainConfig(algo="dacer").resolved()
    assert (dacer.diffusion_steps, dacer.eta) == (20, 0.0)
    assert TrainConfig(algo="dacer2-no-weight").resolved().temporal_weighting is False
    assert TrainConfig(algo="dacer2-no-qgrad").resolved().eta == 0.0
    # The Gaussian baseline has no chain to supervise and no fused kernels, even if the user asks for them.
    gauss = TrainConfig(algo="gaussian", eta=1.0, backend="fused").resolved()
    assert (gauss.eta, gauss.backend) == (0.0, "reference")


def test_target_every_defaults_to_the_policy_delay():
    assert TrainConfig(env_id="Hopper-v5", delay=3).resolved().target_every == 3
    assert TrainConfig(env_id="Hopper-v5", delay=3, target_every=1).resolved().target_every == 1


def test_env_presets_and_user_values_win():
    cheetah = TrainConfig(env_id="HalfCheetah-v5", total_steps=10_000_000).resolved()
    assert cheetah.noise_scale == 0.15 and cheetah.learning_starts == 200_000
    hopper = TrainConfig(env_id="Hopper-v5", total_steps=20_000).resolved()
    assert hopper.noise_scale == 0.1 and hopper.learning_starts == 2_000  # capped at a tenth of the budget
    assert (hopper.actor_lr, hopper.critic_lr, hopper.alpha_every, hopper.eta) == (1e-4, 1e-4, 10_000, 0.01)  # the papers' values (docs/algorithm.md §5)
    assert (hopper.tau, hopper.target_every, hopper.actor_hidden, hopper.critic_hidden) == (0.005, 2, (256,) * 3, (256,) * 3)
    quick = TrainConfig().resolved()
    assert (quick.env_id, quick.total_steps, quick.actor_lr, quick.critic_lr) == ("InvertedPendulum-v5", 14_000, 3e-4, 1e-3)
    assert (quick.tau, quick.target_every, quick.actor_hidden, quick.critic_hidden) == (0.02, 1, (64,) * 3, (64,) * 3)
    # Presets match the env family exactly: HumanoidStandup is not Humanoid, InvertedDoublePendulum not the quick start.
    assert TrainConfig(env_id="HumanoidStandup-v5").resolved().noise_scale == 0.1
    assert TrainConfig(env_id="Humanoid-v5").resolved().noise_scale == 0.15
    assert TrainConfig(env_id="InvertedDoublePendulum-v5").resolved().actor_hidden == (256,) * 3
    mine = TrainConfig(algo="dacer", eta=0.5, diffusion_steps=7, noise_scale=0.3, learning_starts=123).resolved()
    assert (mine.eta, mine.diffusion_steps, mine.noise_scale, mine.learning_starts) == (0.5, 7, 0.3, 123)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(total_steps=0), "total-steps"),
        (dict(diffusion_steps=0), "diffusion-steps"),
        (dict(batch_size=512, buffer_size=100), "buffer-size"),
        (dict(eta=-1.0), "eta"),
        (dict(num_envs=0), "num-envs"),
    ],
)
def test_invalid_config_is_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs).resolved()


def test_config_json_roundtrip():
    cfg = TrainConfig(env_id="Hopper-v5", actor_hidden=(64, 64)).resolved()
    import json

    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"no_such_option": 1})


def test_a_preset_key_that_maps_to_nothing_fails_naming_it():
    from dacer2.config import ALGO_FORCED, ALGO_PRESETS, ENV_PRESETS, check_presets

    check_presets(ALGO_PRESETS, ENV_PRESETS, ALGO_FORCED)  # the shipped presets pass (config.py runs this at import)
    with pytest.raises(ValueError, match="'learning_rate' is not a TrainConfig field"):
        check_presets(ALGO_PRESETS, {**ENV_PRESETS, "Hopper": dict(learning_rate=3e-4)}, ALGO_FORCED)
    # reward_scale is a field, but its default is a number: a preset value for it would never be applied.
    with pytest.raises(ValueError, match="reward_scale defaults to 0.2"):
        check_presets({**ALGO_PRESETS, "dacer": dict(reward_scale=1.0)}, ENV_PRESETS, ALGO_FORCED)
    with pytest.raises(ValueError, match="name no TrainConfig field"):
        check_presets(ALGO_PRESETS, ENV_PRESETS, {"gaussian": dict(etaa=0.0)})


def test_algo_choices_are_the_preset_dict():
    import typing

    from dacer2.config import ALGO_PRESETS, Algo

    assert typing.get_args(Algo) == tuple(ALGO_PRESETS)


def test_papers_protocol_sets_envs_updates_budget_and_eval_period():
    papers = TrainConfig(protocol="papers", env_id="HalfCheetah-v5").resolved()
    assert (papers.num_envs, papers.updates_per_step) == (20, 1)
    assert papers.total_steps == 1_500_000 * 20  # 1.5M iterations, 30M env steps
    assert papers.eval_every == 2_500 * 20
    assert papers.checkpoint_every == 5_000 * 20  # a saved buffer fills 20x faster: checkpoints come less often
    assert papers.learning_starts == 200_000  # the warm-up counts transitions, as the DACER code does
    sac = TrainConfig(env_id="HalfCheetah-v5").resolved()
    assert (sac.protocol, sac.num_envs, sac.updates_per_step, sac.total_steps, sac.eval_every, sac.checkpoint_every) == (
        "sac", 1, 1, 1_000_000, 2_000, 10_000)


def test_papers_protocol_values_stay_overridable():
    cfg = TrainConfig(protocol="papers", env_id="Walker2d-v5", total_steps=2_000_000, num_envs=10,
                      eval_every=1_000).resolved()
    assert (cfg.total_steps, cfg.num_envs, cfg.eval_every) == (2_000_000, 10, 1_000)
    # A budget left to the protocol is counted in iterations, so it follows --num-envs.
    assert TrainConfig(protocol="papers", num_envs=4).resolved().total_steps == 1_500_000 * 4
    assert TrainConfig(protocol="papers", num_envs=4).resolved().eval_every == 2_500 * 4
    # The resolved config records the protocol, and config.json round-trips it.
    import json

    assert json.loads(cfg.to_json())["protocol"] == "papers"
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_iterations_count_steps_of_all_envs():
    from dacer2.config import iterations

    assert iterations(2_000_000, 20) == 100_000
    assert iterations(21, 20) == 2  # a budget that is not a multiple of the envs ends after the iteration that crosses it
    assert iterations(5, 1) == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(env_id="Hopper-v5", total_steps=100), "--total-steps 100 ends within the warm-up of 256"),
        (dict(total_steps=5_000, learning_starts=5_000), "would make no update"),
        (dict(actor_hidden=()), "--actor-hidden needs one or more positive layer sizes, got none"),
        (dict(critic_hidden=(64, 0)), "--critic-hidden needs one or more positive layer sizes, got 64 0"),
    ],
)
def test_configs_that_would_do_nothing_or_crash_later_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs).resolved()
