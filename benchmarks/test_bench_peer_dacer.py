"""Peer row (optional): the official DACER JAX implementation's jitted update beside DACER2Agent.update, same
dims, same T, same run, so the ratio against our eager reference is measured under the same load.

Opt in by pointing DACER2_PEER_DACER at a local checkout of DACER (github.com/happy-yan/DACER-Diffusion-with-
Online-RL) and installing the `peer` extra; otherwise the module is skipped with the reason:

    DACER2_PEER_DACER=/path/to/DACER pip install -e .[peer] && pytest benchmarks/test_bench_peer_dacer.py

The checkout is only read: its directory is put on sys.path and its modules are imported at run time. Nothing of
it is copied into this repository (it carries no licence).

Shape: HalfCheetah dims (obs 17, action 6), 3 x 256 mish actor and critics, batch 256, T = 5 and T = 20 (DACER's
default), one thread: the `bench` fixture runs ours on 1 torch thread; for JAX the module sets
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" (appended to any XLA_FLAGS already
set) before importing jax, i.e. single-threaded Eigen on the XLA CPU backend.

What one timed call is:

- peer (backend column `peer`): DACER's `stateless_update`, the jax.jit function DACER.__init__ builds
  (`DACER(agent, params, delay_update=1)._update`), called with a fresh PRNG key and the train state the
  previous call returned, outputs blocked on (jax.block_until_ready). Inside: the critic targets (no-grad chain
  on s', both target critics), both distributional critics' losses and gradients, the policy loss through all T
  chain steps (lax.scan) and its gradient, Adam on q1, q2 and the policy, Polyak on both targets. DACER's
  default delay_update = 2 would skip the policy's Adam step and the target update on every other call (its
  policy gradient is computed on every call regardless); delay_update = 1 makes every call contain them, as our
  rows do. The net is `create_dacer_net(key, 17, 6, [256]*3, [256]*3, mish, num_timesteps=T)`, as DACER's
  scripts/train_mujoco.py builds it. Excluded: XLA compilation (one untimed warm-up call) and the entropy
  estimate + alpha step, which DACER runs under lax.cond at step % 10,000 == 0: the train state starts at
  step 1 (the step-0 call would fit 256 scikit-learn GMMs through a host callback, minutes on a 2-core CPU;
  DACER2's equivalent is timed in test_bench_entropy.py), so every timed call takes the branch that 9,999 of
  10,000 DACER updates take. The replay batch is on the device before timing, as ours is.
- ours (eager = the reference agent, fused = dacer2.ops): DACER2Agent.update(batch) with delay = 1 (policy step
  on every call), the target Polyak step on every call, no entropy re-estimate (alpha_every = 10^9, started past
  update 0), i.e. test_bench_update.py's row. Modes: `L_q (eta=0)` at T = 5 and T = 20 is the same work as
  DACER's update (no L_g); `L_q+L_g (eta=1)` at T = 5 is full DACER2 (any eta > 0 costs the same; the
  HalfCheetah preset's is 0.01).

The (x) of every row, `peer` included, is our eager reference's median over that row's median at the same
mode and T, measured in this run: above 1 is faster than our reference, below 1 slower. GFLOP/s counts the
reference algorithm's matmul FLOPs (docs/performance.md) for every column, DACER's included (its networks have
the same sizes; its time embedding runs on B rows per step instead of T, a few MFLOP).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pytest

from flops import update_flops
from grid import Case, build_agent, fused_unavailable, random_batch

# The availability check is the peer tests' (tests/peer/peer_dacer.py), so the two opt-ins cannot drift apart.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "peer"))
from peer_dacer import ENV_VAR, XLA_SINGLE_THREAD, peer_unavailable  # noqa: E402

OBS, ACT, B = 17, 6, 256
HIDDEN = [256, 256, 256]
UPDATE_OVERRIDES = dict(delay=1, alpha_every=10**9)


_REASON = peer_unavailable()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

# DACER's relax/utils/persistence.py names jax.core.ClosedJaxpr (deprecated in jax 0.5, removed in 0.6).
pytestmark = pytest.mark.filterwarnings("ignore:jax.core.ClosedJaxpr is deprecated:DeprecationWarning")

# Single-threaded XLA CPU: the flags are read when jax initialises its backend, so they must be set before the
# first `import jax` of this process.
XLA_NOTE = f"XLA_FLAGS {XLA_SINGLE_THREAD}"
if "jax" in sys.modules:
    XLA_NOTE = "XLA_FLAGS NOT applied (jax was imported before this module): XLA may use several threads"
else:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_SINGLE_THREAD}".strip()


def _mode(eta: float) -> str:
    return "L_q+L_g (eta=1)" if eta > 0 else "L_q (eta=0)"


class PeerUpdate:
    """DACER's jitted update at T steps, its train state threaded through the calls (as DACER.update does)."""

    def __init__(self, steps: int):
        root = str(Path(os.environ[ENV_VAR]).resolve())
        if root not in sys.path:
            sys.path.insert(0, root)
        import jax
        import jax.numpy as jnp
        import numpy as np
        from relax.algorithm.dacer import DACER
        from relax.network.dacer import create_dacer_net
        from relax.utils.experience import Experience

        def mish(x):
            return x * jnp.tanh(jax.nn.softplus(x))

        self.jax = jax
        agent, params = create_dacer_net(jax.random.key(0), OBS, ACT, HIDDEN, HIDDEN, mish, num_timesteps=steps)
        self.algorithm = DACER(agent, params, delay_update=1)
        self.update = self.algorithm._update  # jax.jit(stateless_update)
        # Past step 0: the entropy/alpha branch (step % delay_alpha_update == 0) is not taken by the timed calls.
        self.state = self.algorithm.state._replace(step=jnp.int32(1))
        rng = np.random.default_rng(1)  # same distribution as grid.random_batch
        self.data = jax.device_put(Experience(
            obs=rng.standard_normal((B, OBS), dtype=np.float32),
            action=rng.uniform(-1, 1, (B, ACT)).astype(np.float32),
            reward=rng.standard_normal(B, dtype=np.float32),
            done=rng.random(B) < 0.02,
            next_obs=rng.standard_normal((B, OBS), dtype=np.float32),
        ))
        self.keys = list(jax.random.split(jax.random.key(2), 512))
        self.calls = 0
        t0 = time.perf_counter()
        self(self.next_key())  # compiles
        self.compile_s = time.perf_counter() - t0

    def next_key(self):
        self.calls += 1
        return self.keys[self.calls % len(self.keys)]

    def __call__(self, key):
        self.state, self.info = self.update(key, self.state, self.data)
        self.jax.block_until_ready((self.state, self.info))

    def check(self) -> None:
        steps = int(self.state.step)
        assert 1 < steps < self.algorithm.delay_alpha_update, f"timed calls must avoid the entropy branch ({steps})"
        bad = {k: float(v) for k, v in self.info.items() if not math.isfinite(float(v))}
        assert not bad, f"DACER's update returned non-finite metrics: {bad}"


@pytest.fixture(scope="module")
def peer_updates():
    cache: dict[int, PeerUpdate] = {}

    def get(steps: int) -> PeerUpdate:
        if steps not in cache:
            cache[steps] = PeerUpdate(steps)
        return cache[steps]

    return get


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("steps,eta", [(5, 0.0), (20, 0.0), (5, 1.0)], ids=["T5-eta0", "T20-eta0", "T5-eta1"])
def test_ours(bench, steps, eta, backend):
    if backend == "fused" and fused_unavailable("cpu"):
        pytest.skip(fused_unavailable("cpu"))
    case = Case("cpu", backend, steps=steps, batch=B)
    agent = build_agent(case, smoke=bench.smoke, eta=eta, **UPDATE_OVERRIDES)
    agent.num_updates = 1  # update 0 re-estimates the entropy; start past it
    batch = random_batch(case)
    flops = update_flops(OBS, ACT, steps, B, eta_on=eta > 0)
    bench.run(lambda: agent.update(batch), op="update", mode=_mode(eta), flops=flops, backend=backend,
              S=OBS, A=ACT, T=steps, B=B, threads=1, measure_memory=False, headline=True)


@pytest.mark.parametrize("steps", [5, 20], ids=["T5", "T20"])
def test_peer(bench, peer_updates, steps):
    peer = peer_updates(steps)
    jax_version = peer.jax.__version__
    note = f"DACER jitted update, delay_update=1, jax {jax_version}, {XLA_NOTE}; compile {peer.compile_s:.1f} s"
    bench.run(peer, setup=lambda: (peer.next_key(),), op="update", mode=_mode(0.0),
              flops=update_flops(OBS, ACT, steps, B, eta_on=False), backend="peer", S=OBS, A=ACT, T=steps, B=B,
              threads=1, measure_memory=False, headline=True, note=note)
    peer.check()
