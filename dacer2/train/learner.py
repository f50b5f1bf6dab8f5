"""The training loop's compute: the envs' actions and one update per call, eagerly or as replayed CUDA graphs
(--cuda-graphs).

At this package's network sizes a GPU update is bound by kernel launches, not arithmetic (docs/performance.md): an
update launches hundreds of small kernels, each costing the host a few microseconds. A CUDA graph records them once
and replays them all with one launch. Acting at batch --num-envs is graphed the same way (one graph of
DACER2Agent.act on a static observation buffer, whatever the backend computes it with).

What a graph replays: the replay sample (ReplayBuffer.sample_in_graph, which reads the buffer's size from the
device) and DACER2Agent.gradient_step (critic step, policy step, Polyak), one graph for each (update_policy,
update_targets) pair the run meets, so the policy delay needs two. What stays eager: DACER2Agent.finish_update,
the entropy fit and alpha step once in alpha_every updates, and the update count.

Three things make a replay the same update as an eager one:
- the agent's and the buffer's generators are registered with every graph, so each replay draws new numbers (in
  the fused ops too: they take their noise from those generators, or advance device-side counters);
- Adam is capturable (DACER2Agent builds it so when the graphs are on), so its step count lives on the device;
- a replay changes the weights in place without bumping their version counters, so after each replay the agent
  forgets the packed weight copies its fused ops cache, and repacks before acting.

A capture that fails (an op that cannot be captured, an old torch) prints one line and the run goes on with eager
acting and updates: the call that found the failure is done eagerly too, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable

import numpy as np
import torch

from dacer2.algo.agent import DACER2Agent
from dacer2.train.replay import Batch, ReplayBuffer

GraphStep = Callable[[], tuple[Batch, dict]]
# capture(fn, generators) -> replay: records fn once and returns a callable that reruns it and returns its outputs.
Capture = Callable[[Callable, list[torch.Generator]], Callable]
WARMUP_ROUNDS = 3  # eager rounds of every variant before the first capture: lazy inits, kernel compiles, workspaces


def capture_cuda_graph(fn: Callable, generators: list[torch.Generator]) -> Callable:
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        outputs = fn()

    def replay():
        graph.replay()
        return outputs

    return replay


@contextlib.contextmanager
def _side_stream(device: torch.device):
    """Warm-up before a capture runs on a side stream (torch's rule for capturing autograd work)."""
    if device.type != "cuda":
        yield
        return
    main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)


class Learner:
    def __init__(self, agent: DACER2Agent, buffer: ReplayBuffer, graphs: bool,
                 capture: Capture = capture_cuda_graph, log: Callable[[str], None] | None = None):
        self.agent, self.buffer = agent, buffer
        self.graphs = graphs
        self._capture = capture
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self._replays: dict[tuple[bool, bool], GraphStep] = {}
        self.failure = ""  # why a capture failed, if one did
        # eager updates before the first capture: every (policy, targets) variant WARMUP_ROUNDS times
        self.warmup_updates = WARMUP_ROUNDS * max(agent.cfg.delay, agent.cfg.target_every)
        self._warmup_left = self.warmup_updates
        self._act_warmup_left = WARMUP_ROUNDS
        self._act_replay: Callable[[], torch.Tensor] | None = None
        self._act_obs: torch.Tensor | None = None  # the acting graph's static input

    def describe(self) -> str:
        """For the end-of-run line and result.json: on, off, or off after a failed capture (and why)."""
        if self.graphs:
            return "on"
        return f"off after a failed capture ({self.failure})" if self.failure else "off"

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The exploring policy's actions for the training envs' observations [num_envs, S]."""
        agent = self.agent
        obs = torch.as_tensor(obs, dtype=torch.float32, device=agent.device)
        if self.graphs and self._act_warmup_left == 0 and self._act_replay is None:
            self._act_obs = obs.clone()
            self._act_replay = self._try_capture(lambda: agent.act(self._act_obs), [agent.generator])
        if self.graphs and self._act_replay is not None:
            self._act_obs.copy_(obs)
            return self._act_replay().cpu().numpy()
        warming_up = self.graphs and self._act_warmup_left > 0
        self._act_warmup_left -= int(warming_up)
        with _side_stream(agent.device) if warming_up else contextlib.nullcontext():
            return agent.act(obs).cpu().numpy()

    def step(self) -> dict[str, torch.Tensor]:
        """One update from a fresh replay batch; returns the agent's metric tensors (a graph's outputs are
        overwritten by its next replay: read them before the next step)."""
        if not self.graphs:
            return self.agent.update(self.buffer.sample())
        if self._warmup_left > 0:
            self._warmup_left -= 1
            with _side_stream(self.agent.device):
                return self.agent.update(self.buffer.sample_in_graph())
        variant = (self.agent.updates_policy_next(), self.agent.updates_targets_next())
        replay = self._replays.get(variant)
        if replay is None:
            replay = self._capture_variant(variant)
            if replay is None:
                return self.agent.update(self.buffer.sample())
        batch, metrics = replay()
        self.agent.forget_cached_weights()
        return self.agent.finish_update(batch, metrics)

    def _capture_variant(self, variant: tuple[bool, bool]) -> GraphStep | None:
        agent, buffer = self.agent, self.buffer

        def graph_step() -> tuple[Batch, dict]:
            batch = buffer.sample_in_graph()
            return batch, agent.gradient_step(batch, *variant)

        replay = self._try_capture(graph_step, [agent.generator, buffer.generator])
        if replay is not None:
            self._replays[variant] = replay
        return replay

    def _try_capture(self, fn: Callable, generators: list[torch.Generator]) -> Callable | None:
        """fn's replay, or None after a failed capture, which turns the graphs off for the rest of the run."""
        self.agent.forget_cached_weights()  # packs made before the capture would be baked into the graph
        try:
            replay = self._capture(fn, generators)
            self.agent.forget_cached_weights()  # and the packs made in it live in the graph's memory
            return replay
        except Exception as exc:  # whatever the capture met, the run goes on eagerly
            self.graphs = False
            lines = str(exc).strip().splitlines()
            self.failure = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            self._log(f"dacer2: CUDA graph capture failed ({self.failure}); continuing with eager acting and updates")
            self.agent.forget_cached_weights()
            return None
