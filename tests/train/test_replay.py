import numpy as np
import pytest
import torch

from dacer2.train.replay import ReplayBuffer


def test_add_wraps_around_and_sample_uses_stored_rows():
    buf = ReplayBuffer(capacity=5, obs_dim=2, action_dim=1, batch_size=64, device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample()
    for step in range(4):  # 2 envs per step: 8 transitions into 5 slots
        obs = np.full((2, 2), step * 2 + np.arange(2)[:, None], dtype=np.float64)
        buf.add(obs, np.zeros((2, 1)), np.array([step, step]), obs + 100, np.array([0.0, 1.0]))
    assert len(buf) == 5 and buf.position == 3
    assert sorted(buf.obs[:, 0].tolist()) == [3, 4, 5, 6, 7]  # the oldest three were overwritten
    batch = buf.sample()
    assert batch.obs.shape == (64, 2) and batch.terminated.shape == (64,)
    assert torch.equal(batch.next_obs, batch.obs + 100)  # rows stay aligned across fields
    assert set(batch.obs[:, 0].tolist()) <= {3.0, 4.0, 5.0, 6.0, 7.0}


def test_sample_reuses_its_tensors():
    buf = ReplayBuffer(capacity=10, obs_dim=1, action_dim=1, batch_size=4, device=torch.device("cpu"))
    buf.add(np.ones((3, 1)), np.ones((3, 1)), np.ones(3), np.ones((3, 1)), np.zeros(3))
    first = buf.sample().obs
    assert buf.sample().obs.data_ptr() == first.data_ptr()


def test_state_dict_roundtrip():
    buf = ReplayBuffer(capacity=10, obs_dim=1, action_dim=1, batch_size=4, device=torch.device("cpu"), seed=3)
    buf.add(np.arange(6.0)[:, None], np.zeros((6, 1)), np.arange(6.0), np.zeros((6, 1)), np.zeros(6))
    other = ReplayBuffer(capacity=10, obs_dim=1, action_dim=1, batch_size=4, device=torch.device("cpu"))
    other.load_state_dict(buf.state_dict())
    assert len(other) == 6 and torch.equal(other.sample().reward, buf.sample().reward)


def test_a_saved_buffer_holds_the_filled_rows_only(tmp_path):
    """torch.save writes a view's whole storage: a checkpoint of 100 filled rows of a 200k-row buffer must not."""
    buf = ReplayBuffer(capacity=200_000, obs_dim=11, action_dim=3, batch_size=4, device=torch.device("cpu"))
    buf.add(np.ones((100, 11)), np.zeros((100, 3)), np.arange(100.0), np.ones((100, 11)), np.zeros(100))
    torch.save(buf.state_dict(), tmp_path / "buffer.pt")
    filled_bytes = 100 * (11 + 3 + 1 + 11 + 1) * 4
    assert (tmp_path / "buffer.pt").stat().st_size < filled_bytes + 20_000  # the full storage would be ~22 MB
    again = torch.load(tmp_path / "buffer.pt", weights_only=True)
    assert again["obs"].shape == (100, 11) and torch.equal(again["reward"], torch.arange(100.0))
