"""The Triton L_g kernels (dacer2.kernels.qgrad_loss) without a GPU: TRITON_INTERPRET=1 on CPU against the
reference twin (in a subprocess: the interpreter must be on before any @triton.jit runs) and an ahead-of-time
sm_90 compile of the shipped config. float32 tolerance: atol = rtol = 1e-6."""

import textwrap

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install dacer2[triton])")

SCRIPT = textwrap.dedent(
    """
    import torch
    from dacer2.kernels import qgrad_loss as K
    from dacer2.ops import reference
    for T, B, A in [(1, 1, 1), (5, 7, 6), (2, 70, 17)]:  # up to two programs of 128 rows
        eps, g, w = torch.randn(T, B, A), torch.randn(T, B, A), torch.rand(T)
        g[0, 0] = 0.0
        torch.testing.assert_close(K.loss(eps, g, w), reference.qgrad_loss(eps, g, w), atol=1e-6, rtol=1e-6)
        up = torch.tensor(1.7)
        torch.testing.assert_close(K.loss_backward(up, eps, g, w), reference.qgrad_loss_backward(up, eps, g, w),
                                   atol=1e-6, rtol=1e-6)
    print("OK")
    """
)


def test_kernels_match_twin_under_interpreter(run_under_interpreter):
    run_under_interpreter(SCRIPT, timeout=300)


@pytest.mark.parametrize("A", [1, 6, 17])
def test_configs_compile_for_sm90(A):
    from triton.backends.compiler import GPUTarget

    from dacer2.kernels import qgrad_loss as K

    target = GPUTarget("cuda", 90, 32)
    for backward in (False, True):
        kernel = K.compile_for(target, A, backward=backward)
        assert kernel.asm.get("cubin") or kernel.asm.get("ptx")
