"""The reverse diffusion chain through the denoiser eps_theta: the op that acting, the critic targets, the
entropy estimate and the policy loss all run, so it dominates every figure downstream.

Modes: sample = the executed action without autograd (agent.act: chain + alpha-noise, what acting and the
critic targets run); fwd = the training forward that records the graph (agent.trace_chain); bwd = backprop of
a fixed cotangent through all T steps to the actor weights, forward untimed; fwd+bwd = both.

CUDA rows also capture sampling in a CUDA graph: the reference chain (cudagraph) and the fused Triton op (graphed),
the two candidates for acting during a --cuda-graphs training run.
"""

import pytest
import torch


def _obs(bench):
    c = bench.case
    return torch.randn(c.batch, c.obs_dim, generator=torch.Generator().manual_seed(0)).to(c.device)


# compile_batch: the acting size (batch 1) gets a compile row here too, since that is where compile pays most.
@pytest.mark.bench_grid(
    axes=("dims", "steps", "batch"), backends=("eager", "compile", "fused", "cudagraph", "graphed"), compile_batch=(1, 256)
)
@pytest.mark.parametrize("mode", ["sample", "fwd", "bwd", "fwd+bwd"])
def test_chain(bench, case, mode):
    if case.backend in ("cudagraph", "graphed") and mode != "sample":
        pytest.skip("CUDA graphs replay a fixed no-grad sequence; only the sampling chain is captured")
    agent = bench.agent()
    obs = _obs(bench)
    cot = torch.randn(case.batch, case.action_dim, generator=torch.Generator().manual_seed(1)).to(case.device)
    headline = case.dims == "halfcheetah" and case.steps == 5 and case.batch == 256 and mode in ("sample", "fwd+bwd")

    if mode == "sample":
        if case.backend in ("cudagraph", "graphed"):  # the reference chain, or the fused op, in a graph
            fn = _captured_act(bench, agent, obs)
        else:
            def fn():
                return agent.act(obs)
        bench.run(fn, op="chain", mode=mode, flops=bench.flops("chain", mode), headline=headline)
        return

    def forward():
        return agent.trace_chain(obs).action

    def backward(action):
        torch.autograd.backward(action, cot)

    if mode == "fwd":
        bench.run(forward, op="chain", mode=mode, flops=bench.flops("chain", mode))
    elif mode == "bwd":
        bench.run(backward, lambda: (forward(),), op="chain", mode=mode, flops=bench.flops("chain", mode))
    else:
        bench.run(lambda: backward(forward()), op="chain", mode=mode, flops=bench.flops("chain", mode), headline=headline)


def _captured_act(bench, agent, obs):
    """agent.act captured once into a CUDA graph; replays reuse the static input/output buffers. If capture is
    not possible (e.g. an op that syncs with the host), the row records why instead of failing the suite."""
    static_obs = obs.clone()
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graph capture requires
            for _ in range(3):
                agent.act(static_obs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if agent.generator.device.type == "cuda":
            graph.register_generator_state(agent.generator)  # so replays advance the agent's own RNG
        with torch.cuda.graph(graph):
            agent.act(static_obs)
    except Exception as err:  # pragma: no cover - needs a GPU
        bench.not_run(f"CUDA graph capture failed: {type(err).__name__}: {err}", op="chain", mode="sample")
    return graph.replay
