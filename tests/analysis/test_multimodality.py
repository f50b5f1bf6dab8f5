"""The multimodality metric: coverage and entropy on synthetic goal counts, and batched rollouts with scripted
policies whose outcome is known."""

import math

import numpy as np
import pytest

from dacer2.analysis.multimodality import goal_statistics, goal_stats_from_indices, rollout_goals


def test_uniform_over_four_goals():
    stats = goal_statistics([25, 25, 25, 25], none=0)
    assert stats.coverage == 4
    assert stats.entropy_bits == pytest.approx(2.0)
    assert stats.total == 100 and stats.none_fraction == 0.0


def test_single_goal_is_unimodal():
    stats = goal_statistics([0, 90, 0, 0], none=10)
    assert stats.coverage == 1
    assert stats.entropy_bits == 0.0
    assert stats.none_fraction == pytest.approx(0.1)
    assert "left=90" in stats.summary() and "none=10" in stats.summary()


def test_coverage_threshold_counts_all_rollouts_including_none():
    # 5 of 100 is exactly the 5% threshold and counts; 4 of 100 does not.
    assert goal_statistics([60, 31, 5, 4], none=0).coverage == 3
    # The threshold is a share of all rollouts, so failed rollouts dilute it: 5 of 101 < 5%.
    assert goal_statistics([60, 31, 5, 0], none=5).coverage == 2


def test_entropy_ignores_failures_and_matches_formula():
    stats = goal_statistics([30, 10, 0, 0], none=60)
    p = np.array([0.75, 0.25])
    assert stats.entropy_bits == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert 2 ** stats.entropy_bits < 2  # fewer than two effective goals


def test_invalid_counts():
    with pytest.raises(ValueError, match="no rollouts"):
        goal_statistics([0, 0, 0, 0], none=0)
    with pytest.raises(ValueError, match="non-negative"):
        goal_statistics([1, -1, 0, 0])


def test_from_indices():
    stats = goal_stats_from_indices(np.array([0, 0, 1, 3, -1, -1]))
    assert stats.counts == (2, 1, 0, 1) and stats.none == 2
    assert stats.entropy_bits == pytest.approx(1.5)


def test_rollouts_with_scripted_policies():
    calls = []

    def go_right(obs):
        calls.append(len(obs))
        return np.tile([1.0, 0.0], (len(obs), 1))

    right = rollout_goals(go_right, 8)
    assert right.stats.counts == (8, 0, 0, 0) and right.stats.coverage == 1
    # (0,0) -> (4,0) is within distance 1 of (5,0): four steps, so five positions per trajectory.
    assert all(t.shape == (5, 2) for t in right.trajectories)
    assert calls == [8, 8, 8, 8]  # one batched call per step for all episodes

    # Exact start positions are honoured: from (-0.5, 0.5) going left ends in the left goal.
    left = rollout_goals(lambda obs: np.tile([-1.0, 0.0], (len(obs), 1)), 3, start=(-0.5, 0.5))
    assert left.stats.counts == (0, 3, 0, 0)

    still = rollout_goals(lambda obs: np.zeros((len(obs), 2)), 2)
    assert still.stats.none == 2 and still.stats.coverage == 0
    assert all(t.shape == (101, 2) for t in still.trajectories)  # truncated at 100 steps
    assert math.isclose(still.returns[0], 0.0 - 100 * 25.0)  # -min_g ||s-g||^2 = -25 at the origin, per step




def test_per_episode_starts_share_one_batch():
    sizes = []

    def toward_x_sign(obs):  # right from x > 0, left from x < 0
        sizes.append(len(obs))
        return np.stack([np.sign(obs[:, 0]), np.zeros(len(obs))], axis=1)

    result = rollout_goals(toward_x_sign, 4, start=np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]]))
    assert result.goal_index.tolist() == [0, 1, 1, 0]
    assert sizes[0] == 4
    np.testing.assert_allclose(result.trajectories[1][0], [-0.5, 0.5])
    with pytest.raises(ValueError, match="start must be"):
        rollout_goals(toward_x_sign, 3, start=np.zeros((2, 2)))
