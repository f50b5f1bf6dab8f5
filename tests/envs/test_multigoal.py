"""Tests for the multi-goal point-mass environment (dacer2/MultiGoal-v0)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dacer2.envs.multigoal import GOALS, MultiGoalEnv

ENV_ID = "dacer2/MultiGoal-v0"

# Registration normally happens in dacer2/envs/__init__.py; register here only if it did not.
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="dacer2.envs.multigoal:MultiGoalEnv", max_episode_steps=100)


def make_env(**kwargs):
    return gym.make(ENV_ID, **kwargs)


def test_registered_spec():
    env = make_env()
    try:
        assert env.spec.max_episode_steps == 100
        assert isinstance(env.unwrapped, MultiGoalEnv)
    finally:
        env.close()


def test_check_env():
    env = make_env()
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_spaces_and_goals():
    env = MultiGoalEnv()
    assert env.observation_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(env.observation_space.low, [-7, -7])
    np.testing.assert_array_equal(env.observation_space.high, [7, 7])
    assert env.action_space.shape == (2,)
    assert env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, [-1, -1])
    np.testing.assert_array_equal(env.action_space.high, [1, 1])
    np.testing.assert_array_equal(GOALS, [[5, 0], [-5, 0], [0, 5], [0, -5]])


def test_action_is_clipped():
    env = MultiGoalEnv()
    env.reset(seed=0, options={"start": (0.0, 0.0)})
    obs, reward, terminated, truncated, info = env.step(np.array([5.0, -3.0]))
    np.testing.assert_array_equal(obs, [1.0, -1.0])
    np.testing.assert_array_equal(info["position"], [1.0, -1.0])
    # Action cost uses the clipped action: 30 * (1 + 1); nearest goal (5,0)/(0,-5) at squared distance 17.
    assert reward == pytest.approx(-(60.0 + 17.0))
    assert not terminated and not truncated
    assert info["goal_index"] == -1


def test_state_is_clipped_at_walls():
    env = MultiGoalEnv()
    obs, _ = env.reset(options={"start": (6.5, -6.8)})
    np.testing.assert_allclose(obs, [6.5, -6.8], rtol=0, atol=1e-6)
    obs, *_ = env.step(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_array_equal(obs, [7.0, -7.0])
    obs, *_ = env.step(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_array_equal(obs, [7.0, -7.0])
    obs, *_ = env.step(np.array([-1.0, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(obs, [6.0, -6.5])
    assert env.observation_space.contains(obs)
    # The opposite corner.
    env.reset(options={"start": (-6.75, 6.75)})
    obs, *_ = env.step(np.array([-1.0, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(obs, [-7.0, 7.0])


def test_reward_hand_computed():
    env = MultiGoalEnv()
    env.reset(options={"start": (0.0, 0.0)})
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0.25], dtype=np.float32))
    np.testing.assert_array_equal(obs, [0.5, 0.25])
    # action cost: 30 * (0.25 + 0.0625) = 9.375
    # squared distances from the NEW position (0.5, 0.25):
    #   (5,0): 20.3125, (-5,0): 30.3125, (0,5): 22.8125, (0,-5): 27.8125 -> min 20.3125
    assert reward == pytest.approx(-(9.375 + 20.3125), abs=1e-9)
    assert isinstance(reward, float)
    assert not terminated and not truncated and info["goal_index"] == -1


def test_zero_action_reward_from_origin():
    env = MultiGoalEnv()
    env.reset(options={"start": (0.0, 0.0)})
    _, reward, *_ = env.step(np.zeros(2, dtype=np.float32))
    assert reward == pytest.approx(-25.0)


@pytest.mark.parametrize("goal_index", range(4))
def test_reaching_each_goal(goal_index):
    goal = GOALS[goal_index]
    direction = goal / np.linalg.norm(goal)
    env = make_env()
    try:
        env.reset(seed=1, options={"start": tuple(goal - 2.5 * direction)})
        # First step ends 1.5 away from the goal: not reached yet.
        obs, reward, terminated, truncated, info = env.step(direction.astype(np.float32))
        np.testing.assert_allclose(obs, goal - 1.5 * direction, atol=1e-6)
        assert not terminated and info["goal_index"] == -1
        assert reward == pytest.approx(-(30.0 + 1.5**2), abs=1e-5)
        # Second step ends 0.5 away: reached, +10 bonus, terminated.
        obs, reward, terminated, truncated, info = env.step(direction.astype(np.float32))
        np.testing.assert_allclose(obs, goal - 0.5 * direction, atol=1e-6)
        assert terminated and not truncated
        assert info["goal_index"] == goal_index
        assert isinstance(info["goal_index"], int)
        assert reward == pytest.approx(-(30.0 + 0.5**2) + 10.0, abs=1e-5)
    finally:
        env.close()


def test_goal_radius_boundary():
    env = MultiGoalEnv()
    env.reset(options={"start": (0.0, 3.0)})
    _, reward, terminated, _, info = env.step(np.array([0.0, 1.0], dtype=np.float32))  # ends at (0, 4): distance 1
    assert terminated and info["goal_index"] == 2
    assert reward == pytest.approx(-(30.0 + 1.0) + 10.0)
    env.reset(options={"start": (0.0, 2.9)})
    _, _, terminated, _, info = env.step(np.array([0.0, 1.0], dtype=np.float32))  # ends at (0, 3.9)
    assert not terminated and info["goal_index"] == -1


def test_truncation_after_100_steps():
    env = make_env()
    try:
        env.reset(seed=0, options={"start": (0.0, 0.0)})
        zero = np.zeros(2, dtype=np.float32)
        for t in range(1, 101):
            obs, reward, terminated, truncated, info = env.step(zero)
            assert not terminated
            assert truncated == (t == 100), t
            assert reward == pytest.approx(-25.0)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
    finally:
        env.close()


def test_unwrapped_env_never_truncates():
    env = MultiGoalEnv()
    env.reset(options={"start": (0.0, 0.0)})
    for _ in range(150):
        *_, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        assert not truncated


def test_seeding_determinism():
    env_a, env_b = make_env(), make_env()
    try:
        obs_a, _ = env_a.reset(seed=123)
        obs_b, _ = env_b.reset(seed=123)
        np.testing.assert_array_equal(obs_a, obs_b)
        env_a.action_space.seed(7)
        env_b.action_space.seed(7)
        for _ in range(20):
            ra = env_a.step(env_a.action_space.sample())
            rb = env_b.step(env_b.action_space.sample())
            np.testing.assert_array_equal(ra[0], rb[0])
            assert ra[1] == rb[1]
            if ra[2]:
                break
        obs_c, _ = env_a.reset(seed=124)
        assert not np.array_equal(obs_a, obs_c)
    finally:
        env_a.close()
        env_b.close()


def test_start_distribution():
    env = MultiGoalEnv()
    starts = np.array([env.reset(seed=s)[0] for s in range(400)])
    assert starts.dtype == np.float32
    assert np.abs(starts.mean(axis=0)).max() < 0.03
    np.testing.assert_allclose(starts.std(axis=0), 0.1, atol=0.02)


@pytest.mark.parametrize("start", [(0.0, 0.0), (0.5, 0.5), (0.5, -0.5), (-0.5, 0.5), (-0.5, -0.5)])
def test_start_option_is_exact(start):
    env = MultiGoalEnv()
    obs, info = env.reset(seed=3, options={"start": start})
    np.testing.assert_array_equal(obs, np.asarray(start, dtype=np.float32))
    np.testing.assert_array_equal(info["position"], obs)
    assert info["goal_index"] == -1


def test_bad_start_option_rejected():
    env = MultiGoalEnv()
    with pytest.raises(ValueError):
        env.reset(options={"start": (1.0, 2.0, 3.0)})


def test_render_rgb_array():
    env = make_env(render_mode="rgb_array")
    try:
        env.reset(seed=0, options={"start": (0.0, 0.0)})
        img0 = env.render()
        assert isinstance(img0, np.ndarray)
        assert img0.dtype == np.uint8
        assert img0.ndim == 3 and img0.shape[2] == 3
        assert img0.shape[0] >= 32 and img0.shape[1] >= 32
        assert img0.min() != img0.max()
        env.step(np.array([1.0, 1.0], dtype=np.float32))
        env.step(np.array([1.0, 1.0], dtype=np.float32))
        img1 = env.render()
        assert img1.shape == img0.shape
        assert not np.array_equal(img0, img1)  # the dot moved
    finally:
        env.close()


def test_render_none_returns_none():
    env = MultiGoalEnv()
    env.reset(seed=0)
    with pytest.warns(UserWarning):
        assert env.render() is None


def test_invalid_render_mode():
    with pytest.raises(ValueError):
        MultiGoalEnv(render_mode="human")


def test_gym_make_works_after_a_plain_import_dacer2():
    """User code: `import dacer2` alone registers the env id (fresh interpreter: no dacer2.envs imported)."""
    import subprocess
    import sys

    script = ("import dacer2, sys, gymnasium as gym; env = gym.make('dacer2/MultiGoal-v0'); env.reset(seed=0); "
              "assert env.spec.max_episode_steps == 100; print('OK')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
