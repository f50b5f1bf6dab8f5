"""Which code a run came from, for its result.json: the package version and, in a git checkout, the commit and
whether the code's tracked files differ from it. Results are only reproducible from the code that made them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dacer2

PACKAGE_DIR = Path(dacer2.__file__).resolve().parent
# What builds the code beside the package, relative to the checkout's top. Run files committed under results/ are
# outputs: a run writing into its own tracked run directory must not mark the code as changed.
CODE_BESIDE_PACKAGE = ("kernels", "csrc", "setup.py", "pyproject.toml", "requirements-cpu.txt")


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None


def code_version() -> str:
    """E.g. "dacer2 0.1.0, git 33d15b2" (with ", uncommitted changes" when the package or the files that build it
    differ from that commit),
    or "dacer2 0.1.0 (not a git checkout)" for an installed wheel."""
    version = f"dacer2 {dacer2.__version__}"
    head = _git("rev-parse", "--short=7", "HEAD")
    if head is None or head.returncode != 0:
        return f"{version} (not a git checkout)"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                   *(f":(top){path}" for path in CODE_BESIDE_PACKAGE))
    dirty = ", uncommitted changes" if changed is None or changed.stdout.strip() else ""
    return f"{version}, git {head.stdout.strip()}{dirty}"
