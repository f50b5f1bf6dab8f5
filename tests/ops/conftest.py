"""Shared builders for the op tests: small random denoisers/critics packed the way the agent packs them."""

import pytest
import torch

from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain
from dacer2.algo.networks import NoisePredictor, TwinDistributionalCritic
from dacer2.ops import pack_critic, pack_denoiser, schedule_tensor
from dacer2.ops.packing import critic_dims


class Denoiser:
    def __init__(self, S, A, T, hidden=(32, 32), dtype=torch.float32, seed=0):
        torch.manual_seed(seed)
        self.net = NoisePredictor(S, A, hidden).to(dtype)
        self.chain = ReverseChain(DiffusionSchedule.vp(T))
        packed, self.dims = pack_denoiser(self.net, T)
        self.packed = packed.detach().contiguous()
        self.sched = schedule_tensor(self.chain, dtype)
        self.S, self.A, self.T, self.dtype = S, A, T, dtype

    def module_chain(self, obs, noise, chain_noise=True):
        """The reference chain (NoisePredictor + ReverseChain.sample) with explicit noise [>=T, B, A]."""
        emb = self.net.step_embeddings(self.T)
        return self.chain.sample(lambda s, x, t: self.net(s, x, emb[t]), obs, self.A, chain_noise=chain_noise,
                                 noise=noise).action


class Critic:
    def __init__(self, S, A, hidden=(32, 32), dtype=torch.float32, seed=1):
        torch.manual_seed(seed)
        self.net = TwinDistributionalCritic(S, A, hidden).to(dtype)
        self.packed = pack_critic(self.net).detach().contiguous()
        self.dims = critic_dims(self.net, S, A)


@pytest.fixture
def make_denoiser():
    return Denoiser


@pytest.fixture
def make_critic():
    return Critic


@pytest.fixture(scope="session")
def run_under_interpreter():
    """Run a script in a fresh Python with TRITON_INTERPRET=1 (it must be set before any @triton.jit runs, so not
    in this process) and assert it finished by printing OK."""
    import os
    import subprocess
    import sys

    def run(script: str, timeout: int = 600) -> None:
        proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, TRITON_INTERPRET="1"),
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]

    return run
