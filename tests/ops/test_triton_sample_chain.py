"""The Triton acting sampler (dacer2.kernels.sample_chain) without a GPU: run under TRITON_INTERPRET=1 on CPU
against its reference twin (in a subprocess, because the interpreter must be switched on before any
@triton.jit runs), and compiled ahead of time for sm_90 with every shipped config, which catches tile shapes
the real compiler rejects. float32 tolerance: atol = rtol = 1e-4 (tl.dot with input_precision="ieee")."""

import textwrap

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install dacer2[triton])")

INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    torch.set_num_threads(1)
    from dacer2.kernels import sample_chain as K
    from dacer2.algo.networks import NoisePredictor
    from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain
    from dacer2.ops import pack_denoiser, schedule_tensor, reference

    # (B, S, A, T, hidden): small grids (one or two programs); every batch 1/7, obs 4/17, action 1/6, T 1/5.
    cases = [(1, 17, 6, 5, (64, 64)), (7, 4, 1, 1, (64,)), (20, 17, 6, 2, (64, 64))]
    for B, S, A, T, hidden in cases:
        torch.manual_seed(0)
        net = NoisePredictor(S, A, hidden)
        packed, dims = pack_denoiser(net, T)
        packed = packed.detach().contiguous()
        sched = schedule_tensor(ReverseChain(DiffusionSchedule.vp(T)))
        obs = torch.randn(B, S)
        alpha = torch.tensor(0.3)
        cfg = dict(K.pick_config(B), BLOCK_B=16)
        for chain_noise, explore in ((True, True), (False, False)):
            rng_k, rng_r = torch.tensor([9, 4]), torch.tensor([9, 4])
            got = K.launch(obs, packed, dims, sched, alpha, rng_k, None, chain_noise, explore, cfg)
            want = reference.sample_chain(obs, packed, dims, sched, alpha, rng_r, None, chain_noise, explore)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            assert rng_k.tolist() == rng_r.tolist()
        noise = torch.randn(T + 1, B, A)
        got = K.launch(obs, packed, dims, sched, alpha, torch.tensor([1, 0]), noise, True, True, cfg)
        want = reference.sample_chain(obs, packed, dims, sched, alpha, torch.tensor([1, 0]), noise, True, True)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    print("OK")
    """
)


def test_kernel_matches_twin_under_interpreter(run_under_interpreter):
    run_under_interpreter(INTERPRETER_SCRIPT, timeout=600)


@pytest.mark.parametrize("dims", [[17, 6, 5, 256, 256, 256], [348, 17, 20, 256, 256, 256]],
                         ids=["halfcheetah", "humanoid-T20"])
def test_every_config_compiles_for_sm90(dims):
    from triton.backends.compiler import GPUTarget

    from dacer2.kernels import sample_chain as K

    target = GPUTarget("cuda", 90, 32)
    for name, cfg in K.CONFIGS.items():
        kernel = K.compile_for(target, dims, cfg)
        assert kernel.asm.get("cubin") or kernel.asm.get("ptx"), name
    K.compile_for(target, dims, K.CONFIGS["small_batch"], has_noise=True, chain_noise=False, explore=False)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="needs a CUDA GPU (none on this machine); the kernel's numerics are covered by the "
                           "TRITON_INTERPRET=1 test and its compilation by the sm_90 AOT test")
def test_cuda_dispatch_matches_twin():
    import torch

    from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain
    from dacer2.algo.networks import NoisePredictor
    from dacer2.ops import ops, pack_denoiser, reference, schedule_tensor

    torch.manual_seed(0)
    for B in (1, 7, 256):
        net = NoisePredictor(17, 6).cuda()
        packed, dims = pack_denoiser(net, 5)
        packed = packed.detach().contiguous()
        sched = schedule_tensor(ReverseChain(DiffusionSchedule.vp(5)), device="cuda")
        obs, alpha = torch.randn(B, 17, device="cuda"), torch.tensor(0.3, device="cuda")
        rng_k, rng_r = torch.tensor([3, 0], device="cuda"), torch.tensor([3, 0], device="cuda")
        got = ops.sample_chain(obs, packed, dims, sched, alpha, rng_k, None, True, True)
        want = reference.sample_chain(obs, packed, dims, sched, alpha, rng_r, None, True, True)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert rng_k.tolist() == rng_r.tolist()


def test_register_installs_cuda_kernels():
    """Registration needs no GPU: every op has a CUDA kernel (dacer2/ops/cuda.py), and the Triton kernels it runs
    import here."""
    import torch

    from dacer2.ops import cuda
    from dacer2.ops._registry import SCHEMAS

    assert cuda.triton_kernels() is not None and cuda.triton_kernels() is cuda.triton_kernels()  # imported once
    for op in SCHEMAS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dacer2::{op}", "CUDA"), op


def test_kernels_never_import_the_op_library():
    """Imports run dacer2.ops -> dacer2.kernels, never back."""
    import ast
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "dacer2.ops" or n.startswith("dacer2.ops.") for n in names), (path.name, names)
