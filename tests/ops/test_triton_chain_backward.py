"""The Triton training-chain backward (dacer2.kernels.chain_backward) without a GPU: TRITON_INTERPRET=1 on CPU
against the C++ kernel and the reference twin (subprocess: the interpreter must be on before any @triton.jit
runs), and an ahead-of-time sm_90 compile of the shipped config. float32 tolerance: atol = rtol = 2e-4."""

import textwrap

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install dacer2[triton])")

SCRIPT = textwrap.dedent(
    """
    import torch
    from dacer2.kernels import chain_backward as K
    from dacer2.algo.networks import NoisePredictor
    from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain
    from dacer2.ops import ops, pack_denoiser, schedule_tensor, reference
    for B, S, A, T, hidden in [(1, 17, 6, 3, (64, 64)), (7, 4, 1, 1, (64,)), (40, 17, 17, 2, (64, 64))]:
        torch.manual_seed(0)
        net = NoisePredictor(S, A, hidden)
        packed, dims = pack_denoiser(net, T)
        packed = packed.detach().contiguous()
        sched = schedule_tensor(ReverseChain(DiffusionSchedule.vp(T)))
        obs, noise = torch.randn(B, S), torch.randn(T, B, A)
        out = ops.chain_forward(obs, packed, dims, sched, noise, True)
        ga, gv, ge = torch.randn(B, A), torch.randn(T, B, A), torch.randn(T, B, A)
        for grad_visited, grad_eps, sg in [(None, ge, True), (gv, ge, False), (None, None, True)]:
            got = K.launch(ga, grad_visited, grad_eps, obs, packed, dims, sched, *out[1:], sg)
            args = (ga, grad_visited, grad_eps, obs, packed, dims, sched, noise, *out[1:], sg)
            for want in (ops.chain_backward(*args), reference.chain_backward(*args)):
                for a, b in zip(got, want):
                    torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
    print("OK")
    """
)


def test_kernel_matches_cpp_and_twin_under_interpreter(run_under_interpreter):
    run_under_interpreter(SCRIPT, timeout=600)


@pytest.mark.parametrize("dims", [[17, 6, 5, 256, 256, 256], [348, 17, 20, 256, 256, 256]], ids=["halfcheetah", "humanoid"])
def test_config_compiles_for_sm90(dims):
    from triton.backends.compiler import GPUTarget

    from dacer2.kernels import chain_backward as K

    target = GPUTarget("cuda", 90, 32)
    kernel = K.compile_for(target, dims)
    assert kernel.asm.get("cubin") or kernel.asm.get("ptx")
    K.compile_for(target, dims, has_gv=True, has_ge=True, sg=False)
