"""Every Triton kernel against its reference twin at the production width (hidden 256), through
tests/ops/kernel_checks.py. The kernels tile hidden layers in 64-column blocks, so only widths above 64 run their
multi-tile loops.

- CI: one 256-wide case per kernel under TRITON_INTERPRET=1 (about 30 s on the 2-core CPU).
- extended (`make test-slow`; deselected by default): obs 348, T = 20, batch 256 and the large-batch acting config
  under the interpreter (minutes).
- cuda (`make gpu-check`): the compiled kernels on a GPU, odd and production shapes, plus the dispatched op
  through autograd.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (pip install dacer2[triton])")

SCRIPT = Path(__file__).with_name("kernel_checks.py")


def run_checks(device: str, cases: str, interpret: bool, timeout: int) -> None:
    env = dict(os.environ)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", device, "--cases", cases], env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(proc.stdout)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), proc.stdout[-4000:] + proc.stderr[-4000:]


def test_256_wide_under_interpreter():
    run_checks("cpu", "ci", interpret=True, timeout=600)


@pytest.mark.extended
def test_production_shapes_under_interpreter():
    run_checks("cpu", "production", interpret=True, timeout=3600)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: run `make gpu-check` on one (the interpreter tests cover the numerics here)")
def test_compiled_kernels_on_cuda():
    run_checks("cuda", "cuda", interpret=False, timeout=900)
