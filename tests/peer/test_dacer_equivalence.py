"""Optional: `--algo dacer` equals the official DACER implementation (JAX/haiku) up to float32 rounding.

Opt in by pointing DACER2_PEER_DACER at a local checkout of github.com/happy-yan/DACER-Diffusion-with-Online-RL and
installing the `peer` extra; otherwise the module is skipped with the reason:

    DACER2_PEER_DACER=/path/to/DACER python -m pytest tests/peer -q

The checkout is imported at run time (tests/peer/peer_dacer.py), never copied: it carries no licence.

Setup: DACER's own builder `create_dacer_net` (obs 5, action 3, 3 x 32 mish networks) makes the weights, and
`load_official_params` copies them into a DACER2Agent built from `TrainConfig(algo="dacer", env_id="HalfCheetah-v5")`,
whose resolved hyperparameters are DACER's defaults (test_config_is_dacers). Compared, on both our backends where
a backend is involved:

a. the VP schedule and its posterior coefficients, and the sinusoidal time embedding;
b. eps_theta on random inputs, at every step index;
c. the reverse chain and the executed action at T = 20 and T = 5, through sample_policy (no autograd) and
   trace_chain (our fused backend runs a different op for each), from identical noise;
d. the twin distributional critic, and the DSAC-T critic loss and its gradients given DACER's own targets;
e. one update's critic targets, critic loss and gradients, policy loss through the chain and its gradient; then
   three consecutive updates (DACER's delay 2: policy, Adam and Polyak at the first and third) with Adam, Polyak,
   the running sigma statistic and one alpha step.

Equal draws. DACER derives every normal from the update's jax PRNG key (DACER.__init__.stateless_update splits it
in five; DACERNet.get_action and GaussianDiffusion.p_sample split again); ours come from the agent's
torch.Generator. The tests recompute DACER's draws from the key it is given (`official_*_noise`) and feed them to
our code through `ScriptedDraws`, which replaces each draw from our generator, in our order, by the matching one.
DACER's jitted update runs as it is; its losses, gradients and targets are read by a jax.value_and_grad wrapper
that only reports them (jax.debug.callback), and its entropy estimator is replaced by a constant.

Not compared: the entropy fit itself (below); acting through `act`, whose fused op draws its noise in-op from its
own counter-based generator (only chains with injected noise are compared); the deterministic policy.

Known convention differences, accommodated here, not tested:
- Order and count of the draws: DACER draws T chain rows (the last is multiplied by zero at t = 0) and one z per
  critic for the sampled target; we draw T - 1 chain rows after x_T and one z for the lower critic. Same numbers
  are fed, so the difference cannot show.
- Which tied critic gives the sampled target: DACER's `jnp.where(q1 < q2, ...)` takes Q2 at a tie, our argmin Q1.
  Random weights never tie; the test feeds z of the critic DACER picks.
- The entropy estimate (DACER: scikit-learn GaussianMixture via a host callback; ours: dacer2.algo.entropy's EM) is not
  compared: both sides are given the same constant entropy, so the alpha step itself is.
- Exploration noise scale: DACER hard-codes k = 0.15 (relax/network/dacer.py, DACERNet.get_action); our presets
  use 0.1 except HalfCheetah and Humanoid (0.15). env_id HalfCheetah-v5 gives 0.15 here.
- Initial weights: haiku's Linear draws truncated-normal weights (std 1/sqrt(fan_in)) and zero biases; ours are
  PyTorch's uniform(+-1/sqrt(fan_in)) weights and biases. The tests copy DACER's weights, so this cannot show.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.peer.peer_dacer import CLOSED_JAXPR_WARNING, import_peer, peer_unavailable

_REASON = peer_unavailable()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from dacer2.algo.agent import Batch, DACER2Agent, distributional_critic_loss  # noqa: E402
from dacer2.config import TrainConfig  # noqa: E402
from dacer2.algo.diffusion import DiffusionSchedule, sinusoidal_embedding  # noqa: E402
from dacer2.ops import schedule_tensor  # noqa: E402

pytestmark = pytest.mark.filterwarnings(CLOSED_JAXPR_WARNING)

OBS, ACT, B = 5, 3, 16
HIDDEN = (32, 32, 32)
BACKENDS = ["reference", "fused"]
ENTROPY = 1.234
# Parameters after Adam steps, absolute: Adam's first steps move a weight by ~lr = 1e-4 whatever its gradient's
# size, but by lr |g| / (|g| + 1e-8) where |g| is ~1e-8, and such gradients carry percent-level rounding from
# cancellation (seen: 0.2% of a step on the fused backend). 1% of a step still catches any wrong or missing step.
PARAM_ATOL = 1e-6  # the constant entropy both sides are given when alpha steps


# ------------------------------------------------------------------------------------------------------------------
# Fixtures and the two sides' setup
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def peer():
    return import_peer()


_OFFICIAL: dict[int, SimpleNamespace] = {}


def official_net(peer, steps: int) -> SimpleNamespace:
    """DACER's network and params at T steps, built as its scripts/train_mujoco.py builds them (seed 0), with its
    functions jitted once: eager haiku/lax.scan calls would compile op by op on every call."""
    if steps not in _OFFICIAL:
        jax = peer.jax
        net, params = peer.create_dacer_net(jax.random.key(0), OBS, ACT, list(HIDDEN), list(HIDDEN), peer.mish,
                                            num_timesteps=steps)

        def p_sample(key, policy_params, obs):
            model = lambda t, x: net.policy(policy_params, obs, x, t)  # noqa: E731
            return net.diffusion.p_sample(key, model, (*obs.shape[:-1], ACT))

        _OFFICIAL[steps] = SimpleNamespace(net=net, params=params, policy=jax.jit(net.policy), q=jax.jit(net.q),
                                           get_action=jax.jit(net.get_action), p_sample=jax.jit(p_sample))
    return _OFFICIAL[steps]


def dacer_config(steps: int, backend: str) -> TrainConfig:
    return TrainConfig(algo="dacer", env_id="HalfCheetah-v5", diffusion_steps=steps, backend=backend,
                       actor_hidden=HIDDEN, critic_hidden=HIDDEN, batch_size=B, progress=False).resolved()


def our_agent(params, steps: int, backend: str) -> DACER2Agent:
    agent = DACER2Agent(OBS, ACT, dacer_config(steps, backend))
    assert agent.backend == backend
    load_official_params(agent, params)
    return agent


def to_torch(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x).astype(np.float32))  # a copy: DACER's arrays are read-only


def _linears(tree) -> list:
    """A haiku module's Linear layers in creation order: '.../linear', '.../linear_1', ..."""
    def index(name: str) -> int:
        tail = name.rsplit("/", 1)[-1]
        return 0 if tail == "linear" else int(tail.rsplit("_", 1)[1])

    return [tree[name] for name in sorted(tree, key=index)]


def as_our_tensors(policy=None, q=None, target_q=None, log_alpha=None) -> dict[str, torch.Tensor]:
    """DACER's haiku trees (params or gradients) as our parameter names -> tensors.

    haiku's Linear stores w [in, out], as our EnsembleLinear does (twins stacked on a leading axis), and PyTorch's
    nn.Linear stores [out, in]: actor weights are transposed. DACERPolicyNet's layers are, in order, the time MLP's
    two, the hidden ones, the output: our time_in, time_out, hidden.*, out.
    """
    out: dict[str, torch.Tensor] = {}
    if policy is not None:
        names = ["actor.time_in", "actor.time_out", *(f"actor.hidden.{i}" for i in range(len(HIDDEN))), "actor.out"]
        for name, p in zip(names, _linears(policy), strict=True):
            out[f"{name}.weight"] = to_torch(p["w"]).T
            out[f"{name}.bias"] = to_torch(p["b"])
    for prefix, pair in (("critic", q), ("critic_target", target_q)):
        if pair is not None:
            for i, (p1, p2) in enumerate(zip(_linears(pair[0]), _linears(pair[1]), strict=True)):
                out[f"{prefix}.layers.{i}.weight"] = torch.stack([to_torch(p1["w"]), to_torch(p2["w"])])
                out[f"{prefix}.layers.{i}.bias"] = torch.stack([to_torch(p1["b"]), to_torch(p2["b"])])[:, None, :]
    if log_alpha is not None:
        out["log_alpha"] = to_torch(log_alpha).reshape(())
    return out


def official_state_as_ours(params) -> dict[str, torch.Tensor]:
    return as_our_tensors(params.policy, (params.q1, params.q2), (params.target_q1, params.target_q2),
                          params.log_alpha)


def load_official_params(agent: DACER2Agent, params) -> None:
    ours = dict(agent.named_parameters())
    theirs = official_state_as_ours(params)
    assert set(theirs) == set(ours), "the mapping must cover every parameter, no more"
    with torch.no_grad():
        for name, value in theirs.items():
            ours[name].copy_(value)  # in place: bumps the version counters the fused backend's caches key on


def assert_close(ours, theirs, rtol: float, what: str = "") -> None:
    """|ours - theirs| <= rtol * (|theirs| + max |theirs|): relative to each value and to the tensor's scale, so
    entries that cancel to ~0 are judged against the rounding of the terms that produced them."""
    theirs = to_torch(theirs)
    ours = ours.detach().to(torch.float32)
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * scale + 1e-30, msg=lambda m: f"{what}: {m}")


def random_batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    return dict(
        obs=rng.standard_normal((B, OBS), dtype=np.float32),
        action=rng.uniform(-1, 1, (B, ACT)).astype(np.float32),
        reward=rng.standard_normal(B, dtype=np.float32),
        done=rng.random(B) < 0.25,
        next_obs=rng.standard_normal((B, OBS), dtype=np.float32),
    )


def official_batch(peer, data):
    # On the device, as DACER's buffer hands it over; a numpy batch would be scaled in place by the eager run's
    # `reward *= reward_scale`.
    return peer.jax.device_put(peer.Experience(**data))


def our_batch(data) -> Batch:
    return Batch(obs=torch.from_numpy(data["obs"]), action=torch.from_numpy(data["action"]),
                 reward=torch.from_numpy(data["reward"]), next_obs=torch.from_numpy(data["next_obs"]),
                 terminated=torch.from_numpy(data["done"].astype(np.float32)))


# ------------------------------------------------------------------------------------------------------------------
# Equal draws
# ------------------------------------------------------------------------------------------------------------------
class ScriptedDraws:
    """Replaces every normal draw from one torch.Generator (torch.randn and Tensor.normal_, the two our agent
    uses) by the next of the given tensors, checking its shape; other generators draw as usual."""

    def __init__(self, monkeypatch, generator: torch.Generator):
        self.generator, self.queue = generator, deque()
        real_randn, real_normal_ = torch.randn, torch.Tensor.normal_

        def randn(*size, generator=None, **kwargs):
            if generator is not self.generator:
                return real_randn(*size, generator=generator, **kwargs)
            shape = torch.Size(size[0] if len(size) == 1 and not isinstance(size[0], int) else size)
            return self._next(shape).to(dtype=kwargs.get("dtype") or torch.float32, device=kwargs.get("device"))

        def normal_(tensor, mean=0.0, std=1.0, *, generator=None):
            if generator is not self.generator:
                return real_normal_(tensor, mean, std, generator=generator)
            return tensor.copy_(self._next(tensor.shape) * std + mean)

        monkeypatch.setattr(torch, "randn", randn)
        monkeypatch.setattr(torch.Tensor, "normal_", normal_)

    def extend(self, *tensors: torch.Tensor) -> None:
        self.queue.extend(tensors)

    def _next(self, shape: torch.Size) -> torch.Tensor:
        assert self.queue, f"our code drew a {tuple(shape)} normal beyond the scripted draws"
        value = self.queue.popleft()
        assert value.shape == shape, f"our code drew {tuple(shape)} where the script has {tuple(value.shape)}"
        return value

    def assert_consumed(self) -> None:
        assert not self.queue, f"{len(self.queue)} scripted draws left: our code drew fewer normals than DACER"


def official_action_noise(peer, key, steps: int, shape: tuple[int, ...]):
    """The normals DACERNet.get_action(key, ...) draws: the chain's x_T and its T per-step z (drawn by
    GaussianDiffusion.p_sample from the first half of split(key)), and the exploration xi (second half)."""
    random = peer.jax.random
    chain_key, xi_key = random.split(key)
    x_key, z_key = random.split(chain_key)
    return (to_torch(random.normal(x_key, shape)), to_torch(random.normal(z_key, (steps, *shape))),
            to_torch(random.normal(xi_key, shape)), chain_key)


def our_chain_draws(x: torch.Tensor, z: torch.Tensor, xi: torch.Tensor) -> list[torch.Tensor]:
    """DACER's draws in our order: x_T, then the z of steps T-1..1 (DACER's last z meets t = 0, where both chains
    add no noise), then xi."""
    return [x, *z[:-1], xi]


def official_update_noise(peer, official, params, key, next_obs) -> SimpleNamespace:
    """The normals of one DACER update from its key (stateless_update: next_eval, new_eval, q1, q2, log_alpha
    keys), with z the sampled-target draw of the critic whose target mean is lower, as DACER selects it."""
    jax, jnp = peer.jax, peer.jnp
    next_key, policy_key, q1_key, q2_key, _ = jax.random.split(key, 5)
    steps = official.net.num_timesteps
    next_x, next_z, next_xi, _ = official_action_noise(peer, next_key, steps, (B, ACT))
    policy_x, policy_z, policy_xi, _ = official_action_noise(peer, policy_key, steps, (B, ACT))
    next_action = official.get_action(next_key, (params.policy, params.log_alpha), jnp.asarray(next_obs))
    m1, _ = official.q(params.target_q1, next_obs, next_action)
    m2, _ = official.q(params.target_q2, next_obs, next_action)
    z1, z2 = jax.random.normal(q1_key, (B,)), jax.random.normal(q2_key, (B,))
    return SimpleNamespace(
        target=[*our_chain_draws(next_x, next_z, next_xi), to_torch(jnp.where(m1 < m2, z1, z2))],
        policy=our_chain_draws(policy_x, policy_z, policy_xi),
    )


# ------------------------------------------------------------------------------------------------------------------
# DACER's update, run op by op with its gradients recorded
# ------------------------------------------------------------------------------------------------------------------
def recording_value_and_grad(jax, calls: list):
    """A jax.value_and_grad that also reports, from inside the jitted update (jax.debug.callback), what each call
    returned and the arrays the differentiated loss closes over (its targets). It only observes."""
    real = jax.value_and_grad

    def value_and_grad(fun, *args, **kwargs):
        inner = real(fun, *args, **kwargs)

        def call(*a, **k):
            value, grads = inner(*a, **k)
            cells = dict(zip(fun.__code__.co_freevars, (c.cell_contents for c in fun.__closure__ or ())))
            arrays = {name: v for name, v in cells.items() if isinstance(v, jax.Array)}
            jax.debug.callback(lambda v, g, c: calls.append(SimpleNamespace(value=v, grads=g, closure=c)),
                               value, grads, arrays, ordered=True)  # ordered: q1, q2, policy
            return value, grads

        return call

    return value_and_grad


UPDATES = 3  # steps 0, 1, 2: with delay 2 the first and third step the policy and the targets


@pytest.fixture(scope="module")
def official_run(peer):
    """DACER's own jitted update (DACER._update, its defaults, T = 20) from step 0 for UPDATES steps, the entropy
    estimate replaced by ENTROPY. Per step: the batch, the key, the normals that key gives, the params before,
    the recorded q1, q2 and policy value_and_grad calls (the policy's loss and gradient are computed on every step,
    delayed or not), and the state after."""
    official = official_net(peer, 20)
    calls: list = []
    steps = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(peer.jax, "value_and_grad", recording_value_and_grad(peer.jax, calls))
        m.setattr(peer.algorithm_module, "estimate_entropy", lambda actions: np.float32(ENTROPY))
        algorithm = peer.DACER(official.net, official.params)
        state = algorithm.state
        for step in range(UPDATES):
            data = random_batch(seed=20 + step)
            key = peer.jax.random.key(30 + step)
            noise = official_update_noise(peer, official, state.params, key, data["next_obs"])
            before = state.params
            calls.clear()
            state, info = algorithm._update(key, state, official_batch(peer, data))
            peer.jax.block_until_ready((state, info))
            assert len(calls) == 3, "DACER's update was expected to differentiate q1, q2 and the policy loss"
            q1, q2, policy = calls
            steps.append(SimpleNamespace(data=data, noise=noise, params=before, q1=q1, q2=q2, policy=policy,
                                         state=state, info=info))
    return steps


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------
def test_config_is_dacers(peer):
    """Our resolved `--algo dacer` config has DACER's defaults (DACER.__init__'s signature, create_dacer_net's
    T and log_alpha, DACERNet's target entropy)."""
    defaults = {k: p.default for k, p in inspect.signature(peer.DACER.__init__).parameters.items()}
    cfg = dacer_config(20, "reference")
    official = official_net(peer, 20)
    assert (cfg.gamma, cfg.tau, cfg.reward_scale) == (defaults["gamma"], defaults["tau"], defaults["reward_scale"])
    assert cfg.actor_lr == cfg.critic_lr == defaults["lr"] and cfg.alpha_lr == defaults["alpha_lr"]
    assert cfg.delay == cfg.target_every == defaults["delay_update"]
    assert cfg.alpha_every == defaults["delay_alpha_update"] and cfg.entropy_samples == defaults["num_samples"]
    assert cfg.diffusion_steps == 20 == inspect.signature(peer.create_dacer_net).parameters["num_timesteps"].default
    assert cfg.eta == 0.0 and cfg.noise_scale == 0.15 and cfg.activation == "mish"
    assert math.isclose(math.log(cfg.initial_alpha), float(official.params.log_alpha), rel_tol=1e-6)
    assert math.isclose(cfg.target_entropy_scale * ACT, official.net.target_entropy)


# ------------------------------------------------------------------------------------------------------------------
# a. Schedule and time embedding
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [20, 5])
def test_schedule(peer, steps):
    """Betas, alphas, alpha-bars and the posterior coefficients, and the fused ops' [5, T] table made from them.
    DACER computes them in float64 numpy and stores float32; ours stay float64 (the table is float32), so 1e-6
    is float32 storage rounding."""
    theirs = peer.GaussianDiffusion(steps).beta_schedule()
    ours = DiffusionSchedule.vp(steps)
    for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2"):
        assert_close(getattr(ours, name), getattr(theirs, name), 1e-6, name)
    assert_close(ours.posterior_log_variance, theirs.posterior_log_variance_clipped, 1e-6, "log variance")
    # The table's rows: x0 = coef_x x - coef_eps eps, mean = c1 x0 + c2 x, + std z.
    table = schedule_tensor(DACER2Agent(OBS, ACT, dacer_config(steps, "fused")).head.chain)
    std = peer.jnp.exp(0.5 * theirs.posterior_log_variance_clipped)
    for row, name, value in zip(table, ("coef_x", "coef_eps", "c1", "c2", "std"), (
            theirs.sqrt_recip_alphas_cumprod, theirs.sqrt_recipm1_alphas_cumprod, theirs.posterior_mean_coef1,
            theirs.posterior_mean_coef2, std), strict=True):
        assert_close(row, value, 1e-6, f"fused schedule {name}")


def test_time_embedding(peer):
    """The scaled sinusoidal encoding of steps 0..19. The frequencies are computed differently (theta ** -f vs
    exp(-log(theta) f)), a few float32 ulps apart, times t <= 19: 1e-5 of the scale."""
    t = np.arange(20, dtype=np.float32)
    theirs = peer.scaled_sinusoidal_encoding(peer.jnp.asarray(t), dim=16)
    assert_close(sinusoidal_embedding(torch.from_numpy(t), 16), theirs, 1e-5, "embedding")


# ------------------------------------------------------------------------------------------------------------------
# b. eps_theta
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [20, 5])
def test_eps_theta(peer, steps):
    """The denoiser (time MLP included) at every step index, one t for the batch (as the chain calls it) and one
    t per row. Five float32 layers whose matmuls sum in different orders (XLA vs ATen): 1e-5 of the scale."""
    official = official_net(peer, steps)
    agent = our_agent(official.params, steps, "reference")
    rng = np.random.default_rng(3)
    obs, x = rng.standard_normal((B, OBS), dtype=np.float32), rng.standard_normal((B, ACT), dtype=np.float32)
    emb = agent.actor.step_embeddings(steps)
    with torch.no_grad():
        for t in range(steps):
            theirs = official.policy(official.params.policy, obs, x, t)
            assert_close(agent.actor(torch.from_numpy(obs), torch.from_numpy(x), emb[t]), theirs, 1e-5, f"t={t}")
        t_rows = rng.integers(0, steps, B)
        theirs = official.policy(official.params.policy, obs, x, peer.jnp.asarray(t_rows))
        ours = agent.actor(torch.from_numpy(obs), torch.from_numpy(x), emb[torch.from_numpy(t_rows)])
    assert_close(ours, theirs, 1e-5, "per-row t")


# ------------------------------------------------------------------------------------------------------------------
# c. The reverse chain
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official_chains(peer):
    """Per T: DACER's chain output (GaussianDiffusion.p_sample) and executed action (DACERNet.get_action) from one
    key, and the normals that key gives in our order."""
    out = {}
    obs = np.random.default_rng(4).standard_normal((B, OBS), dtype=np.float32)
    for steps in (20, 5):
        official = official_net(peer, steps)
        params, key = official.params, peer.jax.random.key(7)
        x, z, xi, chain_key = official_action_noise(peer, key, steps, (B, ACT))
        out[steps] = SimpleNamespace(
            obs=obs, chain=official.p_sample(chain_key, params.policy, obs),
            action=official.get_action(key, (params.policy, params.log_alpha), obs), draws=our_chain_draws(x, z, xi))
    return out


@pytest.mark.parametrize("path", ["sample_policy", "trace_chain"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [20, 5])
def test_reverse_chain(peer, official_chains, monkeypatch, steps, backend, path):
    """The chain's x_0 and the executed action clip(x_0 + alpha 0.15 xi) from the same draws. sample_policy without
    autograd is the critic-target path (fused: the sample_chain op), trace_chain the policy-loss path (fused:
    chain_forward). Each of T steps amplifies the denoiser's rounding by up to sqrt(1/alpha_bar - 1) ~ 12 before
    the clip: 1e-4 of the scale."""
    theirs = official_chains[steps]
    agent = our_agent(official_net(peer, steps).params, steps, backend)
    obs = torch.from_numpy(theirs.obs)
    draws = ScriptedDraws(monkeypatch, agent.generator)
    draws.extend(*theirs.draws)
    if path == "sample_policy":
        with torch.no_grad():
            x0 = agent.sample_policy(obs)
    else:
        x0 = agent.trace_chain(obs).action
    action = agent.explore(x0)
    draws.assert_consumed()
    assert_close(x0, theirs.chain, 1e-4, "x_0")
    assert_close(action, theirs.action, 1e-4, "executed action")


# ------------------------------------------------------------------------------------------------------------------
# d. Critic
# ------------------------------------------------------------------------------------------------------------------
def test_critic_forward(peer):
    """(mu, sigma) of both critics; four float32 layers: 1e-5 of the scale."""
    official = official_net(peer, 20)
    agent = our_agent(official.params, 20, "reference")
    data = random_batch()
    with torch.no_grad():
        mu, sigma = agent.critic(torch.from_numpy(data["obs"]), torch.from_numpy(data["action"]))
    for i, q in enumerate((official.params.q1, official.params.q2)):
        mean, std = official.q(q, data["obs"], data["action"])
        assert_close(mu[i], mean, 1e-5, f"Q{i + 1} mean")
        assert_close(sigma[i], std, 1e-5, f"Q{i + 1} sigma")


def test_critic_loss_given_dacer_targets(peer, official_run):
    """distributional_critic_loss on DACER's own targets y, y_s and running b_i (its first update): each critic's
    loss and its gradient w.r.t. that critic's weights. The loss divides by sigma^2 + 0.1 and sigma^3 + 0.1, so
    the forward's ~1e-6 relative rounding grows a few times: 1e-4 of the scale."""
    ref = official_run[0]
    agent = our_agent(ref.params, 20, "reference")
    y, y_sample = (to_torch(ref.q1.closure[k]) for k in ("q_backup", "q_backup_sample"))
    b = torch.stack([to_torch(ref.q1.value[1][2]), to_torch(ref.q2.value[1][2])])
    mu, sigma = agent.critic(torch.from_numpy(ref.data["obs"]), torch.from_numpy(ref.data["action"]))
    per_critic = [distributional_critic_loss(mu[i:i + 1], sigma[i:i + 1], y, y_sample, b[i:i + 1]) for i in (0, 1)]
    assert_close(per_critic[0], ref.q1.value[0], 1e-4, "Q1 loss")
    assert_close(per_critic[1], ref.q2.value[0], 1e-4, "Q2 loss")
    sum(per_critic).backward()
    theirs = as_our_tensors(q=(ref.q1.grads, ref.q2.grads))
    for name, p in agent.critic.named_parameters(prefix="critic"):
        assert_close(p.grad, theirs[name], 1e-4, f"grad {name}")


# ------------------------------------------------------------------------------------------------------------------
# e. One update's pieces, then consecutive updates
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_update_pieces(peer, official_run, monkeypatch, backend):
    """DACER's first update, from the same draws: the critic targets y and y_s (a no-grad chain on s', both
    target critics: 1e-5, as the critic forward), our critic loss (the twins' sum), the running b_i and the
    critics' gradients, then the policy loss through the T = 20 chain and its gradient. Losses and gradients
    collect the loss's and the chain's amplified rounding: 1e-4 of each tensor's scale."""
    ref = official_run[0]
    agent = our_agent(ref.params, 20, backend)
    batch = our_batch(ref.data)
    draws = ScriptedDraws(monkeypatch, agent.generator)
    draws.extend(*ref.noise.target)
    y, y_sample = agent.critic_targets(batch)
    draws.assert_consumed()
    assert_close(y, ref.q1.closure["q_backup"], 1e-5, "y")
    assert_close(y_sample, ref.q1.closure["q_backup_sample"], 1e-5, "y_sample")

    draws.extend(*ref.noise.target)  # critic_loss draws its targets afresh
    loss, _ = agent.critic_loss(batch)
    assert_close(loss, ref.q1.value[0] + ref.q2.value[0], 1e-4, "critic loss")
    assert_close(agent.sigma_running, np.stack([ref.q1.value[1][2], ref.q2.value[1][2]]), 1e-5, "b_i")
    loss.backward()
    theirs = as_our_tensors(q=(ref.q1.grads, ref.q2.grads))
    for name, p in agent.critic.named_parameters(prefix="critic"):
        assert_close(p.grad, theirs[name], 1e-4, f"grad {name}")

    draws.extend(*ref.noise.policy)
    policy_loss, _ = agent.policy_loss(batch.obs)
    draws.assert_consumed()
    assert_close(policy_loss, ref.policy.value, 1e-4, "policy loss")
    policy_loss.backward()
    theirs = as_our_tensors(policy=ref.policy.grads)
    for name, p in agent.actor.named_parameters(prefix="actor"):
        assert_close(p.grad, theirs[name], 1e-4, f"grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_consecutive_updates(peer, official_run, monkeypatch, backend):
    """DACER's jitted update (DACER._update, official_run) and DACER2Agent.update from the same start and draws,
    steps 0, 1, 2 with DACER's defaults: step 0 steps the critics, the policy, alpha (on the same constant
    entropy) and Polyaks the targets; step 1 only the critics (delay 2); step 2 as step 0 without alpha. After
    each: every parameter (critics, targets, actor, log alpha) to PARAM_ATOL absolute plus float32 storage
    rounding (rtol 1e-6), and the running b_i (1e-5, as the critic forward)."""
    agent = our_agent(official_run[0].params, 20, backend)
    monkeypatch.setattr(agent, "estimate_entropy", lambda obs: torch.tensor(ENTROPY))
    draws = ScriptedDraws(monkeypatch, agent.generator)
    for step, ref in enumerate(official_run):
        draws.extend(*ref.noise.target, *(ref.noise.policy if step % agent.cfg.delay == 0 else []))
        agent.update(our_batch(ref.data))
        draws.assert_consumed()
        ours = dict(agent.named_parameters())
        for name, value in official_state_as_ours(ref.state.params).items():
            torch.testing.assert_close(ours[name].detach(), to_torch(value), rtol=1e-6, atol=PARAM_ATOL,
                                       msg=lambda m: f"step {step}: {name}: {m}")
        assert_close(agent.sigma_running, np.stack([ref.state.mean_q1_std, ref.state.mean_q2_std]), 1e-5,
                     f"step {step}: b_i")
    assert float(official_run[0].state.params.log_alpha) != math.log(3.0), "alpha was expected to step at step 0"
