"""Every Triton kernel against its plain-PyTorch twin on one device, over a named list of shapes.

Run as a script, because Triton's interpreter must be switched on before any @triton.jit runs:
  TRITON_INTERPRET=1 python tests/ops/kernel_checks.py --device cpu --cases ci   (CPU, no GPU needed)
  python tests/ops/kernel_checks.py --device cuda --cases cuda                   (the real kernels)
It prints one line per comparison with the worst error and exits non-zero if any comparison fails.

Tolerance is relative to each tensor's scale: |got - want| <= tol * (max|want| + |want|) elementwise. At hidden
256 and T = 20 the first step's sqrt(1/abar) (~60) and the 256-term sums make fp32 rounding grow with the
values, so a fixed absolute tolerance would be either too loose for small tensors or too tight for large ones.
"""

from __future__ import annotations

import argparse
import sys

import torch

# (B, S, A, T, hidden): batch 1/7/256 (and a multi-program tail), obs 4/17/348, action 1/6/17, T 1/5/20.
WIDE = (256, 256, 256)
CASES = {
    # One 256-wide case per kernel: the multi-tile loops of the production width, cheap enough for CI.
    "ci": [(7, 17, 6, 5, WIDE)],
    # Production shapes, including obs 348, T = 20, batch 256 and the large-batch acting config.
    "production": [(256, 348, 17, 20, WIDE), (256, 17, 6, 5, WIDE)],
    # On a GPU every shape is cheap: odd shapes, production shapes, a narrow net and a batch tail.
    "cuda": [(1, 17, 6, 5, WIDE), (7, 4, 1, 1, WIDE), (256, 348, 17, 20, WIDE), (1, 348, 1, 20, WIDE),
             (300, 11, 3, 5, (64, 64)), (1000, 17, 6, 5, WIDE)],
}
FORWARD_TOL, GRAD_TOL = 1e-4, 3e-4


class Report:
    def __init__(self):
        self.failures = 0

    def compare(self, label: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        if got.shape != want.shape:
            ok, worst = False, float("inf")
        else:
            bound = tol * (want.abs().max() + want.abs()) + 1e-12
            ratio = (got - want).abs() / bound
            worst = float(ratio.max()) if ratio.numel() else 0.0
            ok = bool(torch.isfinite(got).all()) and worst <= 1.0
        self.failures += not ok
        err = float((got - want).abs().max()) if got.shape == want.shape and got.numel() else float("nan")
        print(f"{'ok  ' if ok else 'FAIL'} {label:70s} max|diff| {err:.2e}  worst/bound {worst:.3f}", flush=True)


def denoiser(B, S, A, T, hidden, device):
    from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain
    from dacer2.algo.networks import NoisePredictor
    from dacer2.ops import pack_denoiser, schedule_tensor

    net = NoisePredictor(S, A, hidden).to(device)
    packed, dims = pack_denoiser(net, T)
    sched = schedule_tensor(ReverseChain(DiffusionSchedule.vp(T)), device=device)
    return packed.detach().contiguous(), dims, sched


def check_sample_chain(report, case, device):
    from dacer2.kernels import sample_chain as K
    from dacer2.ops import reference

    B, S, A, T, hidden = case
    packed, dims, sched = denoiser(B, S, A, T, hidden, device)
    obs, alpha = torch.randn(B, S, device=device), torch.tensor(0.3, device=device)
    configs = K.CONFIGS.items() if device == "cuda" or B > 16 else [("small_batch", K.CONFIGS["small_batch"])]
    for name, cfg in configs:
        for chain_noise, explore in ((True, True), (False, False)):
            rng_k, rng_r = (torch.tensor([9, 4], device=device) for _ in range(2))
            got = K.launch(obs, packed, dims, sched, alpha, rng_k, None, chain_noise, explore, cfg)
            want = reference.sample_chain(obs, packed, dims, sched, alpha, rng_r, None, chain_noise, explore)
            report.compare(f"sample_chain {case[:4]} {name} chain_noise={chain_noise}", got, want, FORWARD_TOL)
            if rng_k.tolist() != rng_r.tolist():
                report.failures += 1
                print(f"FAIL sample_chain {case[:4]} {name}: rng {rng_k.tolist()} != {rng_r.tolist()}")
        noise = torch.randn(T + 1, B, A, device=device)
        got = K.launch(obs, packed, dims, sched, alpha, torch.tensor([1, 0], device=device), noise, True, True, cfg)
        want = reference.sample_chain(obs, packed, dims, sched, alpha, torch.tensor([1, 0], device=device), noise,
                                      True, True)
        report.compare(f"sample_chain {case[:4]} {name} injected noise", got, want, FORWARD_TOL)


def check_chain(report, case, device):
    """The training chain's forward kernel, then its backward kernel in the three gradient layouts."""
    from dacer2.kernels import chain_backward as KB
    from dacer2.kernels import chain_forward as KF
    from dacer2.ops import reference

    B, S, A, T, hidden = case
    packed, dims, sched = denoiser(B, S, A, T, hidden, device)
    obs, noise = torch.randn(B, S, device=device), torch.randn(T, B, A, device=device)
    got = KF.launch(obs, packed, dims, sched, noise)
    want = reference.chain_forward(obs, packed, dims, sched, noise, True)
    for name, a, b in zip(("action", "visited", "eps", "saved_h", "saved_d"), got, want):
        report.compare(f"chain_forward {case[:4]} {name}", a, b, FORWARD_TOL)
    ga, gv, ge = (torch.randn(*shape, device=device) for shape in ((B, A), (T, B, A), (T, B, A)))
    for grad_visited, grad_eps, sg in ((None, ge, True), (gv, ge, False), (None, None, True)):
        layout = f"visited={grad_visited is not None} eps={grad_eps is not None} sg={sg}"
        got = KB.launch(ga, grad_visited, grad_eps, obs, packed, dims, sched, *want[1:], sg)
        ref = reference.chain_backward(ga, grad_visited, grad_eps, obs, packed, dims, sched, noise, *want[1:], sg)
        for name, a, b in zip(("grad_obs", "grad_packed"), got, ref):
            report.compare(f"chain_backward {case[:4]} {layout} {name}", a, b, GRAD_TOL)


def check_critic_action_grad(report, case, device):
    from dacer2.kernels import critic_action_grad as K
    from dacer2.algo.networks import TwinDistributionalCritic
    from dacer2.ops import pack_critic, reference
    from dacer2.ops.packing import critic_dims

    B, S, A, T, hidden = case
    critic = TwinDistributionalCritic(S, A, hidden).to(device)
    packed, dims = pack_critic(critic).detach().contiguous(), critic_dims(critic, S, A)
    obs, action = torch.randn(B, S, device=device), torch.rand(T, B, A, device=device) * 2 - 1
    for mode in (0, 1, 2):
        q, g = K.launch(obs, action, packed, dims, mode)
        q_ref, g_ref = reference.critic_action_grad(obs, action, packed, dims, mode)
        report.compare(f"critic_action_grad {case[:4]} mode={mode} q", q, q_ref, FORWARD_TOL)
        report.compare(f"critic_action_grad {case[:4]} mode={mode} dq/da", g, g_ref, GRAD_TOL)


def check_qgrad_loss(report, case, device):
    from dacer2.kernels import qgrad_loss as K
    from dacer2.ops import reference

    B, S, A, T, hidden = case
    eps, g = torch.randn(T, B, A, device=device), torch.randn(T, B, A, device=device)
    weight = torch.rand(T, device=device)
    g[0, 0] = 0.0  # a zero action-gradient: the 1e-8 in the normalisation must keep the target finite
    report.compare(f"qgrad_loss {case[:4]}", K.loss(eps, g, weight), reference.qgrad_loss(eps, g, weight),
                   FORWARD_TOL)
    up = torch.tensor(1.7, device=device)
    report.compare(f"qgrad_loss_backward {case[:4]}", K.loss_backward(up, eps, g, weight),
                   reference.qgrad_loss_backward(up, eps, g, weight), GRAD_TOL)


def check_dispatch_autograd(report, case, device):
    """Through the registered op and autograd (what the agent runs): d/d(obs, packed) of a loss on the action and
    eps outputs, against the reference twin's backward given the same upstream gradients."""
    from dacer2.ops import ops, reference

    B, S, A, T, hidden = case
    packed, dims, sched = denoiser(B, S, A, T, hidden, device)
    obs, noise = torch.randn(B, S, device=device), torch.randn(T, B, A, device=device)
    probe_action, probe_eps = torch.randn(B, A, device=device), torch.randn(T, B, A, device=device)
    o, p = obs.clone().requires_grad_(True), packed.clone().requires_grad_(True)
    action, visited, eps, saved_h, saved_d = ops.chain_forward(o, p, dims, sched, noise, True)
    got = torch.autograd.grad((probe_action * action).sum() + (probe_eps * eps).sum(), (o, p))
    want = reference.chain_backward(probe_action, None, probe_eps, obs, packed, dims, sched, noise, visited.detach(),
                                    eps.detach(), saved_h, saved_d, True)
    for name, a, b in zip(("grad_obs", "grad_packed"), got, want):
        report.compare(f"dispatched chain autograd {case[:4]} {name}", a, b, GRAD_TOL)


CHECKS = (check_sample_chain, check_chain, check_critic_action_grad, check_qgrad_loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--cases", choices=tuple(CASES), required=True)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("kernel_checks: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    report = Report()
    for case in CASES[args.cases]:
        torch.manual_seed(0)
        for check in CHECKS:
            check(report, case, args.device)
        if args.device == "cuda":
            check_dispatch_autograd(report, case, args.device)
    print(f"{report.failures} failed" if report.failures else "OK", flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
