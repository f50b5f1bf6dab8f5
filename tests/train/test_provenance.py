"""result.json's `code`: the package version and the git commit a run came from."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import dacer2
from dacer2.train import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed here")


def test_outside_a_checkout_the_version_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)
    assert provenance.code_version() == f"dacer2 {dacer2.__version__} (not a git checkout)"


@needs_git
def test_in_a_checkout_the_commit_and_whether_the_code_changed(tmp_path, monkeypatch):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    package, run_dir = tmp_path / "dacer2", tmp_path / "results" / "exp" / "runs" / "run"
    package.mkdir()
    run_dir.mkdir(parents=True)
    (package / "agent.py").write_text("one\n")
    (tmp_path / "setup.py").write_text("one\n")
    (run_dir / "metrics.csv").write_text("step\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    sha = git("rev-parse", "--short=7", "HEAD").strip()
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    clean = f"dacer2 {dacer2.__version__}, git {sha}"
    dirty = f"{clean}, uncommitted changes"
    assert provenance.code_version() == clean
    (package / "notes.txt").write_text("untracked files do not count\n")
    assert provenance.code_version() == clean
    # a run rewriting its committed run files (a rerun into results/) is output, not code
    (run_dir / "metrics.csv").write_text("step\n0\n")
    assert provenance.code_version() == clean
    (tmp_path / "setup.py").write_text("two\n")
    assert provenance.code_version() == dirty
    git("checkout", "setup.py")
    (package / "agent.py").write_text("two\n")
    assert provenance.code_version() == dirty


def test_the_format():
    assert re.fullmatch(r"dacer2 \S+(, git [0-9a-f]{7,}(, uncommitted changes)?| \(not a git checkout\))",
                        provenance.code_version())
