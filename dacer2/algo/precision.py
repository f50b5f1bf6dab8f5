"""GEMM precision: the matrix multiplies of the actor, the critics and the chain in float32, or in bfloat16 with
float32 accumulation (--precision bf16), and which of the two a host should run (--precision auto).

In bf16 only the matrix multiplies change: both operands are rounded to bf16 (8-bit mantissa), the product is
accumulated in fp32 by oneDNN and rounded to bf16 once more on output, then widened back to fp32. Everything else
stays fp32: master weights, Adam, biases, mish, the losses, L_g's normalisation, the critic's distributional
terms and the entropy fit. The casts are differentiable, so the backward GEMMs of a bf16 forward run in bf16 too.
The fused C++ ops take the same `gemm_dtype` and follow the same rule (csrc/ops.cpp).
"""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")
# Flags of CPUs whose matrix units multiply bf16 natively (Intel AMX, AVX512-BF16 on Intel and AMD Zen 4+).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# "auto" picks bf16 only if the self-check measures at least this speed-up of a bf16 GEMM over fp32.
AUTO_MIN_SPEEDUP = 1.5


def gemm_dtype(precision: str) -> torch.dtype | None:
    """The dtype the GEMMs round to: None for fp32 (no rounding), torch.bfloat16 for bf16."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be resolved to fp32 or bf16 here, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else None


def mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """a @ b, in `dtype` with the result widened back to a's dtype when dtype is given."""
    if dtype is None:
        return a @ b
    return _rounded_mm(a, b, dtype).to(a.dtype)


def _rounded_mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The product in `dtype`; adding it to an fp32 tensor widens it inside the add (type promotion), the same
    values as widening first, with one pass and one temporary fewer."""
    return a.to(dtype) @ b.to(dtype)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """bias + a @ b (a batched b [E, K, N] with bias [E, 1, N] works too); the bias add stays in a's dtype."""
    if dtype is None:
        return torch.baddbmm(bias, a, b) if b.dim() == 3 else torch.addmm(bias, a, b)
    return torch.add(_rounded_mm(a, b, dtype), bias.to(a.dtype))


def linear(x: torch.Tensor, layer: torch.nn.Linear, dtype: torch.dtype | None = None) -> torch.Tensor:
    """layer(x) with its matrix multiply in `dtype`; exactly layer(x) when dtype is None."""
    return layer(x) if dtype is None else addmm(layer.bias, x, layer.weight.t(), dtype)


def addmm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """acc += a @ b, in place (weight-gradient accumulation)."""
    return acc.addmm_(a, b) if dtype is None else acc.add_(_rounded_mm(a, b, dtype))


def cpuinfo_field(name: str) -> str:
    """The first `name : value` line of /proc/cpuinfo ("" where there is none, or no /proc: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.split(":", 1)[0].strip() == name), "")
    return line.split(":", 1)[-1].strip()


def cpu_flags() -> set[str]:
    return set(cpuinfo_field("flags").split())  # empty off Linux, so auto stays fp32 there


def host_description(device: torch.device | str) -> str:
    """What a run's timings were measured on, for its result.json: VMs name different CPU generations alike
    ("AMD EPYC"), so the family/model numbers and bf16 units go with the name."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    bf16 = " ".join(sorted(cpu_flags() & set(BF16_FLAGS))) or "no bf16 units"
    model = cpuinfo_field("model name") or "unknown CPU"
    return (f"{model} (family {cpuinfo_field('cpu family') or '?'} model {cpuinfo_field('model') or '?'}, "
            f"{os.cpu_count()} cores, {bf16}), torch {torch.__version__}")


def _gemm_seconds(dtype: torch.dtype, size: int = 256, repeats: int = 7, clock=time.perf_counter) -> float:
    """The fastest of `repeats` timed GEMMs. The fastest, not the mean: on a machine busy with other runs one call
    descheduled mid-way would otherwise sway the choice."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up: oneDNN builds its kernel on the first call
    fastest = math.inf
    for _ in range(repeats):
        start = clock()
        a @ b
        fastest = min(fastest, clock() - start)
    return fastest


@functools.lru_cache(maxsize=None)
def host_bf16_report() -> tuple[bool, str]:
    """(whether this CPU multiplies bf16 natively and fast, why). Reads the CPU flags first and measures a 256^3 GEMM
    both ways only where the flags promise hardware, so a CPU that would emulate bf16 never pays the slow check."""
    flags = sorted(cpu_flags() & set(BF16_FLAGS))
    if not flags:
        return False, f"this CPU has none of {', '.join(BF16_FLAGS)}: bf16 would be emulated, slower than fp32"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, f"the CPU has {', '.join(flags)} but torch's oneDNN reports no bf16 support"
    # At one thread: per-core speed is the question, and on a machine whose cores are busy (other trainings) a
    # multi-threaded fp32 GEMM stalls on its thread barrier (measured 8 ms against 0.24 ms at 1 thread, 2 cores)
    # and would make bf16 look 100x faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        speedup = _gemm_seconds(torch.float32) / _gemm_seconds(torch.bfloat16)
    finally:
        torch.set_num_threads(threads)
    if speedup < AUTO_MIN_SPEEDUP:
        return False, f"the CPU has {', '.join(flags)} but a bf16 GEMM measured only {speedup:.1f}x fp32"
    return True, f"the CPU has {', '.join(flags)} and a 256^3 bf16 GEMM measured {speedup:.1f}x fp32 at 1 thread"


def resolve_precision(requested: str, device: torch.device | str) -> tuple[str, str]:
    """(fp32 or bf16, why) for a run on `device`."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {PRECISIONS}")
    try:
        device = torch.device(device)
    except RuntimeError:  # reported here because configs resolve their precision before the trainer sees the device
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if device.type != "cpu":
        if requested == "bf16":
            raise ValueError("--precision bf16 is implemented for CPUs; on a GPU use fp32")
        return "fp32", f"{device.type} runs fp32 (bf16 GEMMs are implemented for CPUs)"
    if requested != "auto":
        return requested, "as requested"
    fast, why = host_bf16_report()
    return ("bf16" if fast else "fp32"), f"auto: {why}"
