"""dacer2-export: a trained diffusion policy as one ONNX file (see dacer2/deploy/export.py for the file's inputs and
outputs); the export extra supplies onnx, and onnxruntime for the check."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import tyro


# dacer2 is on no package index: the extra installs from a clone of it (make install-ray installs Ray and ONNX).
EXPORT_EXTRA_HINT = ("install the export extra from the dacer2 clone: make install-ray, or "
                     "pip install --no-build-isolation -e '.[export]'")


@dataclass
class ExportArgs:
    """Export a trained diffusion policy to ONNX (inputs obs [B, S] and noise [T+1, B, A], output the action)."""

    run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR_OR_CHECKPOINT")]
    """A run directory or a checkpoint file (.pt)."""
    out: str = "policy.onnx"
    """Where to write the ONNX file."""
    check: bool = True
    """Run the file once with onnxruntime (if installed) and compare it with Policy.act on the same noise."""


def export_main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ExportArgs, args=argv, prog="dacer2-export")
    from dacer2.train.checkpoint import CheckpointError
    from dacer2.deploy.export import check_with_onnxruntime, export_onnx
    from dacer2.deploy.policy import Policy

    try:
        policy = Policy.load(args.run, backend="reference")
        path, module = export_onnx(policy, args.out)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"dacer2-export: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"dacer2-export: error: {exc}; {EXPORT_EXTRA_HINT}", file=sys.stderr)
        return 2
    result = (f"wrote {path} ({policy.info.env_id}, obs {policy.info.obs_dim}, action {policy.info.action_dim}, "
              f"T = {policy.config.diffusion_steps})")
    if args.check:  # the check's outcome joins the result line: the command prints one line
        try:
            result += f"; onnxruntime check: max |difference| to the policy {check_with_onnxruntime(module, path):.2e}"
        except ImportError:
            result += "; onnxruntime is not installed: skipped the check (pip install onnxruntime)"
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(export_main())
