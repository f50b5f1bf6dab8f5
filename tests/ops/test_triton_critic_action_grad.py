"""The Triton critic action-gradient (dacer2.kernels.critic_action_grad) without a GPU: TRITON_INTERPRET=1 on
CPU against the reference twin (subprocess: the interpreter must be on before any @triton.jit runs) and an
ahead-of-time sm_90 compile of the shipped config. float32 tolerance: atol = rtol = 1e-4."""

import textwrap

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install dacer2[triton])")

SCRIPT = textwrap.dedent(
    """
    import torch
    from dacer2.kernels import critic_action_grad as K
    from dacer2.algo.networks import TwinDistributionalCritic
    from dacer2.ops import pack_critic, reference
    from dacer2.ops.packing import critic_dims
    # (N, B, S, A, hidden): one or two programs of 32 rows
    for N, B, S, A, hidden in [(1, 1, 17, 6, (64, 64)), (5, 7, 4, 1, (64,)), (2, 20, 17, 17, (64, 64, 64))]:
        torch.manual_seed(0)
        critic = TwinDistributionalCritic(S, A, hidden)
        packed, dims = pack_critic(critic).detach().contiguous(), critic_dims(critic, S, A)
        obs, action = torch.randn(B, S), torch.rand(N, B, A) * 2 - 1
        for mode in (0, 1, 2):
            q, g = K.launch(obs, action, packed, dims, mode)
            q_ref, g_ref = reference.critic_action_grad(obs, action, packed, dims, mode)
            torch.testing.assert_close(q, q_ref, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)
    print("OK")
    """
)


def test_kernel_matches_twin_under_interpreter(run_under_interpreter):
    run_under_interpreter(SCRIPT, timeout=600)


@pytest.mark.parametrize("dims", [[17, 6, 256, 256, 256], [348, 17, 256, 256, 256]], ids=["halfcheetah", "humanoid"])
def test_config_compiles_for_sm90(dims):
    from triton.backends.compiler import GPUTarget

    from dacer2.kernels import critic_action_grad as K

    kernel = K.compile_for(GPUTarget("cuda", 90, 32), dims, mode=0)
    assert kernel.asm.get("cubin") or kernel.asm.get("ptx")
