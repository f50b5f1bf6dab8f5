"""The entropy regulator's estimate (docs/algorithm.md §4): a 3-component full-covariance Gaussian mixture per state, fitted
to K = 200 actions for each of 256 states, A = 6 (HalfCheetah).

gmm_fit: the mixture fit + entropy bound alone, on fixed samples. Base: scikit-learn's GaussianMixture run
once per state (the algorithm's reference; same settings as tests/test_entropy.py). sklearn is slow (~20 ms per
state here), so it is timed on a subset of states and scaled to 256 (the row's note says how many); ours
fits all 256 states in one batched call.
entropy_estimate: agent.estimate_entropy on 256 states, i.e. sampling 51,200 actions through the chain plus
the fit: what one alpha step costs every 10,000 updates. Base: the eager reference agent.
"""

import numpy as np
import pytest
import torch

STATES, SAMPLES, COMPONENTS = 256, 200, 3


def _mixture_samples(action_dim: int) -> torch.Tensor:
    """Three-mode clouds per state, clipped to the action box: a fixed stand-in for a policy's actions so the
    fit sees the multimodal data it exists for (an untrained policy gives a single blob)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(STATES, COMPONENTS, action_dim, generator=g) * 1.6 - 0.8
    which = torch.randint(0, COMPONENTS, (STATES, SAMPLES), generator=g)
    x = centres.gather(1, which[..., None].expand(-1, -1, action_dim))
    return (x + 0.15 * torch.randn(STATES, SAMPLES, action_dim, generator=g)).clamp(-1, 1)


@pytest.mark.bench_grid(axes=(), backends=("sklearn", "eager"), devices=("cpu",))
def test_gmm_fit(bench, case, request, smoke):
    from dacer2.algo.entropy import estimate_entropy

    samples = _mixture_samples(case.action_dim)
    meta = dict(op="gmm_fit", mode="256x200", ratio_base="sklearn", T=None, B=STATES)
    if case.backend == "eager":
        ours = samples[:16] if smoke else samples  # smoke: same code path, fewer states
        bench.run(lambda: estimate_entropy(ours, n_components=COMPONENTS), min_rounds=3, max_rounds=10,
                  headline=True, **meta)
        return

    from sklearn.mixture import GaussianMixture

    n = 2 if smoke else (8 if request.config.option.bench_quick else 32)
    data = samples[:n].double().numpy()

    def per_state():
        out = []
        for x in data:
            gm = GaussianMixture(n_components=COMPONENTS, covariance_type="full", random_state=0).fit(x)
            _, logdet = np.linalg.slogdet(gm.covariances_)
            dim = x.shape[1]
            comp = 0.5 * dim * (1 + np.log(2 * np.pi)) + 0.5 * logdet
            out.append(float((gm.weights_ * comp).sum() - (gm.weights_ * np.log(gm.weights_)).sum()))
        return out

    bench.run(per_state, rounds=2, warm=False, time_scale=STATES / n, headline=True,
              note=f"timed on {n} states, scaled to {STATES}", **meta)


@pytest.mark.bench_grid(axes=(), backends=("eager", "fused"))
def test_entropy_estimate(bench, case, smoke):
    agent = bench.agent()
    obs = torch.randn(STATES, case.obs_dim, generator=torch.Generator().manual_seed(0)).to(case.device)
    if smoke:  # one call of the real path on few states: the code is the same, the size is irrelevant here
        obs = obs[:4]
    # ~2-8 s a call here: two timed rounds after one warm-up (inside pedantic) are all the budget allows.
    bench.run(lambda: agent.estimate_entropy(obs), rounds=2, warm=False, warmup_rounds=1, op="entropy_estimate", mode=f"{obs.shape[0]}x{SAMPLES}", T=agent.head.chain.num_steps, B=obs.shape[0])
