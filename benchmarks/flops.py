"""The analytic FLOP model of the benchmarked code: 2 x matmul multiply-adds; elementwise work (mish, Adam,
clips) is not counted.

docs/performance.md derives these terms; test_bench_update.py checks update_flops against torch's own counts.
Pure Python, so a report or a test can use it without building anything.
"""

from __future__ import annotations


def _mlp_macs(sizes) -> int:
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def flop_terms(S: int, A: int, actor_hidden=(256, 256, 256), critic_hidden=(256, 256, 256), time_dim=16):
    """Multiply-adds per row: eps_theta (Pa), one critic (Pc), the critic's first layer (Pc1), and half of the
    time-embedding MLP per step (h: its two layers, 16x32 and 32x16, are the same size)."""
    Pa = _mlp_macs((S + A + time_dim, *actor_hidden, A))
    Pc = _mlp_macs((S + A, *critic_hidden, 2))
    Pc1 = (S + A) * critic_hidden[0]
    h = time_dim * 2 * time_dim
    return Pa, Pc, Pc1, h


def _emb_flops(T: int, h: int) -> tuple[int, int]:
    # Forward of both embedding layers on T rows; backward = time_out input + weight gradients, time_in weight
    # gradient only (its input is the fixed sinusoidal code).
    return 2 * T * 2 * h, 2 * T * 3 * h


def op_flops(op: str, mode: str, S: int, A: int, T: int, B: int) -> float:
    """Matmul FLOPs of one call of a benchmarked op (reference algorithm)."""
    Pa, Pc, Pc1, h = flop_terms(S, A)
    emb_f, emb_b = _emb_flops(T, h)
    if op == "chain":
        fwd = 2 * Pa * T * B + emb_f
        bwd = 4 * Pa * T * B + emb_b  # the actor's first-layer input carries the chain state: input + weight grads
        return float({"sample": fwd, "fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    if op == "critic":  # twin critic training pass: weight gradients, none into the replay inputs
        fwd = 4 * Pc * B
        bwd = 4 * Pc * B + 4 * (Pc - Pc1) * B
        return float({"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    if op == "critic_action_grad":  # q and dq/da through frozen weights
        return float(8 * Pc * B)
    if op == "policy_loss":  # chain + L_q + L_g (eta > 0, stop-gradient), as in update_flops
        fwd = emb_f + 2 * Pa * T * B + 4 * Pc * B + 8 * Pc * T * B + emb_f + 2 * Pa * T * B
        bwd = emb_b + 4 * Pa * T * B + 4 * Pc * B + emb_b + 4 * Pa * T * B
        return float({"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    raise KeyError(op)


def update_flops(S: int, A: int, T: int, B: int, eta_on: bool = True) -> float:
    """One DACER2Agent.update including the policy step (delay 1), L_g with stop-gradient, no entropy re-estimate."""
    Pa, Pc, Pc1, h = flop_terms(S, A)
    emb_f, emb_b = _emb_flops(T, h)
    total = emb_f + 2 * Pa * T * B + 4 * Pc * B  # critic targets: no-grad chain on s', target twin on (s', a')
    total += 4 * Pc * B + 4 * Pc * B + 4 * (Pc - Pc1) * B  # twin critic forward + backward
    total += emb_f + emb_b + 6 * Pa * T * B  # policy chain forward + backward through all T steps
    total += 8 * Pc * B  # L_q: min-Q of the executed action and its gradient to the action
    if eta_on:
        total += 8 * Pc * T * B  # L_g: Q and its action-gradient at all T visited states
        total += emb_f + emb_b + 6 * Pa * T * B  # eps_theta(s, sg(x_t), t) forward + backward
    return float(total)
