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
def test_in_a_checkout_the_commit_and_whether_tracked_files_changed(tmp_path, monkeypatch):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "agent.py").write_text("one\n")
    git("add", "agent.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    sha = git("rev-parse", "--short=7", "HEAD").strip()
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)
    assert provenance.code_version() == f"dacer2 {dacer2.__version__}, git {sha}"
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert provenance.code_version() == f"dacer2 {dacer2.__version__}, git {sha}"
    (tmp_path / "agent.py").write_text("two\n")
    assert provenance.code_version() == f"dacer2 {dacer2.__version__}, git {sha}, uncommitted changes"


def test_the_format():
    assert re.fullmatch(r"dacer2 \S+(, git [0-9a-f]{7,}(, uncommitted changes)?| \(not a git checkout\))",
                        provenance.code_version())
