"""What the benchmark suites run: the shape/backend grid, one `Case` per row, and the agent and replay batch a
row computes with.

Backends (a row's `backend` column):
  eager      the plain-PyTorch reference agent (TrainConfig(backend="reference")): the ratio base.
  compile    the same agent with its actor and critics wrapped by torch.compile (Inductor). The first call's
             extra time is reported separately as compile_s; the timed rounds exclude it.
  fused      TrainConfig(backend="fused"): dacer2.ops custom ops (C++ on CPU, Triton on CUDA). Rows appear
             automatically once dacer2.ops reports fused kernels for the device; otherwise one placeholder
             per suite and device is skipped with the reason.
  cudagraph  (CUDA only) the reference acting chain captured once in a CUDA graph and replayed.
  graphed    (CUDA only) the fused agent with --cuda-graphs on: its whole update (replay sample, critic and
             policy steps, Polyak) replayed by dacer2.train.learner.Learner, or its acting (the Triton sampling
             op) captured in a graph: beside cudagraph's rows, the measurement that picks the acting path.
  sklearn    (entropy only) scikit-learn's GaussianMixture per state, the algorithm's reference for the entropy
             estimate and therefore the ratio base there.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch

from dacer2.config import TrainConfig

# Environment presets whose dimensions the grid uses: (env id, obs dim S, action dim A).
DIMS = OrderedDict(halfcheetah=("HalfCheetah-v5", 17, 6), humanoid=("Humanoid-v5", 348, 17))
FULL_GRID = dict(dims=tuple(DIMS), steps=(5, 20), batch=(1, 20, 256))
QUICK_GRID = dict(dims=("halfcheetah",), steps=(5,), batch=(1, 256))
# torch.compile costs 10-60 s per graph on this 2-core machine, so by default compile rows cover only the
# shapes training uses (DACER2's T = 5, batch 256; a suite may add batch 1 for acting through its bench_grid
# marker's compile_batch); --bench-compile-all adds the rest.
COMPILE_GRID = dict(dims=("halfcheetah",), steps=(5,), batch=(256,))
# Per-op CPU rows run on 1 torch thread: they compare kernels, and on a shared machine a 2-thread OpenMP region
# stalls whenever one of its threads is descheduled (measured here under load ~10: a T=20 chain fwd+bwd took
# 0.3 s on 1 thread and 1.5-11 s on 2). Whole-update and training rows use --bench-threads (default 2, the
# count docs/performance.md's update figures and CI use). Smoke runs (--benchmark-disable) use 1 thread throughout.
OP_THREADS = 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One row's coordinates. `skip` is set on placeholder cases that exist only to say why a backend or
    device has no rows here."""

    device: str
    backend: str
    dims: str = "halfcheetah"
    steps: int | None = None  # None: T is not a coordinate of this row (the agent uses its preset T = 5)
    batch: int = 256
    skip: str | None = None

    @property
    def env_id(self) -> str:
        return DIMS[self.dims][0]

    @property
    def obs_dim(self) -> int:
        return DIMS[self.dims][1]

    @property
    def action_dim(self) -> int:
        return DIMS[self.dims][2]

    @property
    def id(self) -> str:
        if self.skip:
            return f"{self.device}-{self.backend}-unavailable"
        steps = f"-T{self.steps}" if self.steps else ""
        return f"{self.device}-{self.backend}-{self.dims}{steps}-B{self.batch}"


_FUSED_REASON: dict[str, str | None] = {}


def fused_unavailable(device: str) -> str | None:
    """Why the fused backend cannot run on `device`, or None when it can. Checked once per device."""
    if device in _FUSED_REASON:
        return _FUSED_REASON[device]
    reason = None
    try:
        import dacer2.ops as dops
    except Exception as err:  # the package may be absent or half-built while kernels are developed
        reason = f"dacer2.ops is not importable ({type(err).__name__}: {err})"
    else:
        has = getattr(dops, "has_fused_kernels", None)
        if has is None:
            reason = "dacer2.ops has no has_fused_kernels(); cannot tell whether fused kernels exist"
        elif not has(device):
            what = "the C++ extension dacer2._C is not built" if device == "cpu" else "Triton kernels not registered"
            reason = f"no fused kernels for {device}: {what}"
        else:
            # dacer2.ops falls back to its reference twins where a kernel is missing, so also check that the
            # agent really resolves to the fused path.
            try:
                agent = build_agent(Case(device, "fused"), smoke=True)
                if getattr(agent, "backend", None) != "fused":
                    reason = f"TrainConfig(backend='fused') resolved to {getattr(agent, 'backend', '?')!r}"
            except Exception as err:
                reason = f"building a fused agent failed ({type(err).__name__}: {err})"
    _FUSED_REASON[device] = reason
    return reason


def _devices(requested) -> list[tuple[str, str | None]]:
    out = []
    for dev in requested:
        if dev == "cuda" and not torch.cuda.is_available():
            out.append((dev, "no CUDA device (torch.cuda.is_available() is False)"))
        else:
            out.append((dev, None))
    return out


def grid_cases(
    axes=(),
    backends=("eager", "compile", "fused"),
    devices=("cpu", "cuda"),
    fixed=None,
    compile_batch=COMPILE_GRID["batch"],
    quick: bool = False,
    compile_all: bool = False,
) -> list[Case]:
    """The rows of one suite: every backend x device x the grid's values on `axes` (`fixed` pins an axis, e.g.
    batch=256 for the update), plus a skipped placeholder per backend or device that cannot run, with why."""
    fixed = fixed or {}
    grid = QUICK_GRID if quick else FULL_GRID
    limits = dict(COMPILE_GRID, batch=compile_batch)
    compile_grid = grid if compile_all else {k: tuple(v for v in grid[k] if v in limits[k]) for k in grid}

    cases = []
    for device, no_device in _devices(devices):
        if no_device:
            cases.append(Case(device, "any", skip=no_device))
            continue
        for backend in backends:
            if backend in ("cudagraph", "graphed") and device != "cuda":
                continue  # a CUDA-only variant; on a CPU-only machine the cuda placeholder already explains
            if backend in ("fused", "graphed"):
                reason = fused_unavailable(device)
                if reason:
                    cases.append(Case(device, backend, skip=reason))
                    continue
            g = compile_grid if backend == "compile" else grid
            values = {
                ax: (fixed[ax],) if ax in fixed else (g[ax] if ax in axes else (None,))
                for ax in ("dims", "steps", "batch")
            }
            for dims in values["dims"]:
                for steps in values["steps"]:
                    for batch in values["batch"]:
                        kw = {k: v for k, v in dict(dims=dims, steps=steps, batch=batch).items() if v is not None}
                        cases.append(Case(device, backend, **kw))
    return cases


def build_agent(case: Case, smoke: bool = False, **overrides):
    """A DACER2 agent for this row's dims/T on its device, computing through the row's backend."""
    from dacer2.algo.agent import DACER2Agent

    config_backend = "fused" if case.backend in ("fused", "graphed") else "reference"
    graphs = "on" if case.backend == "graphed" else "off"
    cfg = TrainConfig(env_id=case.env_id, diffusion_steps=case.steps, backend=config_backend, seed=0,
                      cuda_graphs=graphs, **overrides)
    torch.manual_seed(0)  # network init draws from the global generator
    agent = DACER2Agent(case.obs_dim, case.action_dim, cfg.resolved(), case.device)
    if case.backend == "compile":
        # Module-level compile: the agent's Python (chain loop, losses, optimizer) stays as in the reference and
        # every network call goes through Inductor. Compiling the whole chain was tried: torch.randn(generator=)
        # graph-breaks at every step, so it ends up as the same per-step graphs at a higher compile cost.
        # dynamic=False: one static-shape graph per shape, Inductor's best code (automatic dynamic shapes would
        # switch to slower symbolic-shape kernels as soon as a second batch size appears).
        kwargs = {"backend": "eager"} if smoke else {"dynamic": False}
        for module in (agent.actor, agent.critic, agent.critic_target):
            module.compile(**kwargs)
    return agent


def random_batch(case: Case, batch: int | None = None, seed: int = 1):
    """A replay-like batch: actions in the box, a few terminal transitions."""
    from dacer2.algo.agent import Batch

    n = batch or case.batch
    g = torch.Generator().manual_seed(seed)

    def dev(x):
        return x.to(case.device)

    return Batch(
        obs=dev(torch.randn(n, case.obs_dim, generator=g)),
        action=dev(torch.rand(n, case.action_dim, generator=g) * 2 - 1),
        reward=dev(torch.randn(n, generator=g)),
        next_obs=dev(torch.randn(n, case.obs_dim, generator=g)),
        terminated=dev((torch.rand(n, generator=g) < 0.02).float()),
    )


def graphed_learner(agent, case: Case, transitions: int = 10_000):
    """A Learner replaying `agent`'s update as CUDA graphs over a buffer of random transitions, past its eager
    warm-up and captures, so that every later step() is one replay plus the eager bookkeeping."""
    from dacer2.train.learner import Learner
    from dacer2.train.replay import ReplayBuffer

    buffer = ReplayBuffer(transitions, case.obs_dim, case.action_dim, case.batch, torch.device(case.device), seed=1)
    fill = random_batch(case, transitions)
    buffer.add(*(x.cpu().numpy() for x in fill))
    learner = Learner(agent, buffer, graphs=True)
    for _ in range(learner.warmup_updates + 2 * agent.cfg.delay):  # then one capture per variant
        learner.step()
    if learner.describe() != "on":
        raise RuntimeError(f"the update could not be captured: {learner.describe()}")
    return learner
