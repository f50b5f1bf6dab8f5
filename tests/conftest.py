"""Shared test setup. Tests run on CPU; a couple of threads keeps the suite steady on the 2-core CI machine."""

import pytest
import torch

from dacer2.config import TrainConfig

torch.set_num_threads(2)

# Networks and batch sizes small enough that a few hundred training steps take seconds.
TINY_TRAINING = dict(
    actor_hidden=(16, 16), critic_hidden=(16, 16), batch_size=32, entropy_states=4, entropy_samples=20, progress=False,
)


@pytest.fixture(scope="session")
def tiny_config():
    """Build a TrainConfig for a tiny, fast training run; keyword arguments override or add fields."""

    def make(**overrides) -> TrainConfig:
        return TrainConfig(**{**TINY_TRAINING, **overrides})

    return make
