"""The learner: eager updates unchanged, the graph path's bookkeeping (variants, warm-up, what stays eager, cache
forgetting, the fallback) with a CPU stand-in for the capture, the device-side replay sample, --cuda-graphs'
resolution, and on a GPU the real graphs against eager updates."""

import numpy as np
import pytest
import torch

from dacer2.algo.agent import DACER2Agent
from dacer2.config import TrainConfig
from dacer2.train.learner import WARMUP_ROUNDS, Learner
from dacer2.train.replay import ReplayBuffer

OBS, ACT = 3, 2


def _setup(device="cpu", **overrides):
    cfg = TrainConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=16, entropy_states=8,
                      entropy_samples=50, alpha_every=4, device=device, **overrides).resolved()
    torch.manual_seed(cfg.seed)
    agent = DACER2Agent(OBS, ACT, cfg, device)
    buffer = ReplayBuffer(200, OBS, ACT, cfg.batch_size, torch.device(device), seed=1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        buffer.add(rng.normal(size=(10, OBS)), rng.uniform(-1, 1, (10, ACT)), rng.normal(size=10),
                   rng.normal(size=(10, OBS)), (rng.uniform(size=10) < 0.1).astype(np.float64))
    return agent, buffer


def _state(agent: DACER2Agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.state_dict().values()]


class RecordingCapture:
    """A CPU stand-in for capture_cuda_graph: 'replaying' reruns the recorded function eagerly, so a learner on it
    must produce exactly the eager updates on the same batches."""

    def __init__(self):
        self.captured = 0
        self.generators = None

    def __call__(self, fn, generators):
        self.captured += 1
        self.generators = generators
        return fn


def test_eager_learner_is_agent_update_on_buffer_sample():
    agent, buffer = _setup()
    twin_agent, twin_buffer = _setup()
    learner = Learner(agent, buffer, graphs=False)
    for _ in range(5):
        metrics = learner.step()
        expected = twin_agent.update(twin_buffer.sample())
    assert all(torch.equal(a, b) for a, b in zip(_state(agent), _state(twin_agent)))
    assert metrics.keys() == expected.keys() and all(torch.equal(metrics[k], expected[k]) for k in metrics)
    assert learner.describe() == "off"


@pytest.mark.parametrize("delay", [1, 2])
def test_graph_path_makes_the_eager_updates_and_captures_one_graph_per_variant(delay):
    agent, buffer = _setup(delay=delay)
    twin_agent, twin_buffer = _setup(delay=delay)
    capture = RecordingCapture()
    learner = Learner(agent, buffer, graphs=True, capture=capture)
    forgets = []
    agent.forget_cached_weights = lambda: forgets.append(agent.num_updates)
    steps = WARMUP_ROUNDS * delay + 6
    for _ in range(steps):
        metrics = learner.step()
        expected = twin_agent.update(twin_buffer.sample_in_graph())
    assert all(torch.equal(a, b) for a, b in zip(_state(agent), _state(twin_agent)))
    assert agent.num_updates == twin_agent.num_updates == steps
    assert metrics.keys() == expected.keys() and all(torch.equal(metrics[k], expected[k]) for k in metrics)
    assert capture.captured == delay  # (policy + targets) and, with a delay, (critic only)
    assert capture.generators == [agent.generator, buffer.generator]  # every draw advances on each replay
    # after every replay, and before and after each capture, the packed weight copies are dropped
    assert len(forgets) == (steps - WARMUP_ROUNDS * delay) + 2 * delay
    assert learner.describe() == "on"


def test_entropy_fit_and_alpha_step_stay_outside_the_graph():
    agent, buffer = _setup(delay=1)
    captured_fns = []

    def capture(fn, generators):
        captured_fns.append(fn)
        return fn

    learner = Learner(agent, buffer, graphs=True, capture=capture)
    calls = []
    agent.update_alpha = lambda obs: calls.append(agent.num_updates)
    for _ in range(WARMUP_ROUNDS + 8):
        learner.step()
    assert calls == [0, 4, 8]  # alpha_every = 4, counted by the eager bookkeeping
    calls.clear()
    captured_fns[0]()  # the captured step itself never refits
    assert calls == []


def test_a_failed_capture_says_so_once_and_the_run_continues_eagerly():
    agent, buffer = _setup(delay=2)
    twin_agent, twin_buffer = _setup(delay=2)
    messages = []

    def failing_capture(fn, generators):
        raise RuntimeError("operation not permitted when stream is capturing\nlong CUDA detail")

    learner = Learner(agent, buffer, graphs=True, capture=failing_capture, log=messages.append)
    warmup = WARMUP_ROUNDS * 2
    for _ in range(warmup):
        learner.step()
        twin_agent.update(twin_buffer.sample_in_graph())
    for _ in range(4):  # the update that met the failure is made eagerly, and so is every one after it
        learner.step()
        twin_agent.update(twin_buffer.sample())
    assert agent.num_updates == warmup + 4
    assert all(torch.equal(a, b) for a, b in zip(_state(agent), _state(twin_agent)))
    assert messages == ["dacer2: CUDA graph capture failed (RuntimeError: operation not permitted when stream is "
                        "capturing); continuing with eager acting and updates"]
    assert learner.describe().startswith("off after a failed capture (RuntimeError: operation not permitted")


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_graphed_acting_acts_as_the_agent_does_and_sees_new_weights(backend):
    agent, buffer = _setup(backend=backend)
    twin, _ = _setup(backend=backend)
    capture = RecordingCapture()
    learner = Learner(agent, buffer, graphs=True, capture=capture)
    obs = np.random.default_rng(3).normal(size=(5, OBS)).astype(np.float32)
    for i in range(WARMUP_ROUNDS + 3):
        got = learner.act(obs + i)
        expected = twin.act(torch.as_tensor(obs + i)).numpy()
        assert np.array_equal(got, expected)  # the same draws from the agent's generator, in the same order
    assert capture.captured == 1 and capture.generators == [agent.generator]
    with torch.no_grad():  # an update replay changes the weights behind the version counters...
        for net in (agent, twin):
            for p in net.actor.parameters():
                p.data.mul_(1.5)
    agent.forget_cached_weights()  # ...and the learner forgets the packs after each one
    twin.forget_cached_weights()
    assert np.array_equal(learner.act(obs), twin.act(torch.as_tensor(obs)).numpy())


def test_a_failed_acting_capture_falls_back_to_eager_acting_and_updates():
    agent, buffer = _setup()
    twin, twin_buffer = _setup()
    messages = []

    def failing_capture(fn, generators):
        raise RuntimeError("capture failed")

    learner = Learner(agent, buffer, graphs=True, capture=failing_capture, log=messages.append)
    obs = np.ones((2, OBS), dtype=np.float32)
    for _ in range(WARMUP_ROUNDS + 2):
        assert np.array_equal(learner.act(obs), twin.act(torch.as_tensor(obs)).numpy())
    assert len(messages) == 1 and "eager acting and updates" in messages[0] and not learner.graphs
    assert torch.equal(learner.step()["critic_loss"], twin.update(twin_buffer.sample())["critic_loss"])
    assert all(torch.equal(a, b) for a, b in zip(_state(agent), _state(twin)))


def test_gradient_step_plus_finish_update_is_update():
    agent, buffer = _setup(delay=2)
    twin, _ = _setup(delay=2)
    for _ in range(5):
        batch = buffer.sample()
        expected = twin.update(batch)
        got = agent.finish_update(batch, agent.gradient_step(batch, agent.updates_policy_next(),
                                                             agent.updates_targets_next()))
        assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in got)
    assert all(torch.equal(a, b) for a, b in zip(_state(agent), _state(twin)))


def test_forgetting_cached_weights_repacks_the_fused_heads_copies():
    agent, _ = _setup(backend="fused")
    obs = torch.randn(4, OBS)

    def act():
        agent.generator.manual_seed(9)
        return agent.act(obs, deterministic=True)

    before = act()
    stale = agent.head.actor_cache.get()[0]
    with torch.no_grad():  # what a graph replay does: new weights, version counters untouched
        for p in agent.actor.parameters():
            p.data.mul_(1.5)
    assert torch.equal(act(), before) and agent.head.actor_cache.get()[0] is stale  # the stale copy acts
    agent.forget_cached_weights()
    assert not torch.equal(agent.head.actor_cache.get()[0], stale)
    assert not torch.equal(act(), before)  # acting uses the new weights
    critic_pack = agent.critic_compute.critic_cache.get()
    agent.forget_cached_weights()
    assert agent.critic_compute.critic_cache.get() is not critic_pack


def test_sample_in_graph_reads_the_size_from_the_device_and_follows_adds():
    buffer = ReplayBuffer(capacity=50, obs_dim=1, action_dim=1, batch_size=256, device=torch.device("cpu"), seed=2)
    buffer.add(np.arange(3.0)[:, None], np.zeros((3, 1)), np.arange(3.0), np.arange(3.0)[:, None] + 100, np.zeros(3))
    first = buffer.sample_in_graph()
    assert set(first.obs[:, 0].tolist()) == {0.0, 1.0, 2.0}  # 256 draws from 3 rows hit every row, nothing else
    assert torch.equal(first.next_obs, first.obs + 100) and torch.equal(first.reward, first.obs[:, 0])
    pointer = first.obs.data_ptr()
    buffer.add(np.arange(3.0, 60.0)[:, None], np.zeros((57, 1)), np.arange(3.0, 60.0), np.zeros((57, 1)), np.zeros(57))
    second = buffer.sample_in_graph()
    assert second.obs.data_ptr() == pointer  # the same static tensors, as a captured graph needs
    rows = set(second.obs[:, 0].tolist())
    assert rows <= set(np.arange(10.0, 60.0).tolist()) and len(rows) > 40  # the full, wrapped buffer
    restored = ReplayBuffer(capacity=50, obs_dim=1, action_dim=1, batch_size=256, device=torch.device("cpu"))
    restored.sample_in_graph  # the size tensor exists before the load, as in a resumed graphed run
    restored.add(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)), np.zeros(1))
    restored.sample_in_graph()
    restored.load_state_dict(buffer.state_dict())
    assert len(set(restored.sample_in_graph().obs[:, 0].tolist())) > 40


def test_cuda_graphs_resolution():
    assert TrainConfig(device="cpu").resolved().cuda_graphs == "off"
    assert TrainConfig(device="cpu", cuda_graphs="off").resolved().cuda_graphs == "off"
    with pytest.raises(ValueError, match="--cuda-graphs on needs a CUDA device"):
        TrainConfig(device="cpu", cuda_graphs="on").resolved()
    if not torch.cuda.is_available():
        assert TrainConfig(device="auto").resolved().cuda_graphs == "off"
    cfg = TrainConfig(device="cuda").resolved()  # resolving needs no GPU: a config may be written for one
    assert cfg.cuda_graphs == "on" and cfg.resolved().cuda_graphs == "on"


def test_adam_is_capturable_only_for_graphs_on_cuda():
    agent, _ = _setup()
    assert not agent.actor_optimizer.defaults["capturable"] and not agent.critic_optimizer.defaults["capturable"]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run `make gpu-check` on a GPU machine)")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_graphed_updates_match_eager_on_the_gpu(backend):
    """100 updates, same seed: replayed graphs against eager updates on the same device-side samples."""
    graphed_agent, graphed_buffer = _setup("cuda", backend=backend, cuda_graphs="on")
    eager_agent, eager_buffer = _setup("cuda", backend=backend, cuda_graphs="on")
    assert graphed_agent.critic_optimizer.defaults["capturable"]
    learner = Learner(graphed_agent, graphed_buffer, graphs=True)
    for _ in range(100):
        learner.step()
        eager_agent.update(eager_buffer.sample_in_graph())
    assert learner.describe() == "on" and len(learner._replays) == 2
    for a, b in zip(_state(graphed_agent), _state(eager_agent)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    obs = torch.randn(8, OBS, device="cuda")
    graphed_agent.generator.manual_seed(3)
    eager_agent.generator.manual_seed(3)
    torch.testing.assert_close(graphed_agent.act(obs, deterministic=True), eager_agent.act(obs, deterministic=True),
                               rtol=1e-4, atol=1e-5)  # acting sees the replayed weights


@pytest.mark.cuda
@cuda
def test_a_graphed_run_checkpoints_and_resumes_with_graphs_on(tmp_path):
    from dacer2.train.checkpoint import load_checkpoint
    from dacer2.train.trainer import train

    cfg = dict(env_id="InvertedPendulum-v5", learning_starts=100, eval_every=200, eval_episodes=2, log_every=100,
               actor_hidden=(16, 16), critic_hidden=(16, 16), batch_size=32, entropy_states=4, entropy_samples=20,
               alpha_every=150, checkpoint_every=200, progress=False, save_buffer=True, device="cuda")
    first = train(TrainConfig(**cfg, total_steps=300, run_dir=str(tmp_path / "run")))
    assert first.cuda_graphs == "on"  # auto on a CUDA device
    before = load_checkpoint(first.checkpoint)["agent"]["modules"]
    resumed = train(TrainConfig(resume=str(tmp_path / "run"), total_steps=600))
    assert resumed.cuda_graphs == "on" and resumed.env_steps == 600 and resumed.updates == first.updates + 300
    modules = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")["agent"]["modules"]
    assert all(torch.isfinite(v).all() for v in modules.values())
    assert not torch.equal(before["actor.out.weight"], modules["actor.out.weight"])  # the replays trained it
