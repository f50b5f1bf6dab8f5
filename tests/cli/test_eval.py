"""dacer2-eval on a tiny checkpoint trained in the test: returns, final-return metric, multi-goal coverage and
trajectory figure, video, and one-line errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dacer2.cli.eval import eval_main
from dacer2.train.trainer import train
from dacer2.analysis.video import RenderError, ensure_rendering

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config):
    tmp = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(
        env_id="dacer2/MultiGoal-v0", total_steps=300, learning_starts=100, eval_every=100, eval_episodes=2,
        alpha_every=100, run_dir=str(tmp / "run"), torch_threads=1,
    )
    return train(cfg).run_dir


def test_eval_multigoal_reports_and_plots(run_dir, tmp_path, capsys):
    out_json, plot, video = tmp_path / "eval.json", tmp_path / "traj.png", tmp_path / "episode.gif"
    code = eval_main([str(run_dir), "--episodes", "2", "--multigoal-rollouts", "12", "--trajectories-per-start", "2",
                      "--plot", str(plot), "--json-out", str(out_json), "--video", str(video)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "deterministic return:" in printed and "stochastic return:" in printed
    assert "coverage" in printed and "final return (best training evaluation in the last 10%" in printed
    report = json.loads(out_json.read_text())
    assert report["env_id"] == "dacer2/MultiGoal-v0" and report["env_steps"] == 300
    for mode in ("deterministic", "stochastic"):
        assert report["returns"][mode]["episodes"] == 2
        assert np.isfinite(report["returns"][mode]["mean"])
        goals = report["multigoal"][mode]
        assert goals["total"] == 12 and sum(goals["counts"].values()) + goals["none"] == 12
    # The run evaluated every 100 steps; the last 10% of 300 steps holds only the evaluation at 300.
    with open(run_dir / "metrics.csv", newline="") as f:
        last_eval = [float(r["eval_return_mean"]) for r in csv.DictReader(f) if r["eval_return_mean"]][-1]
    assert report["final_return"] == pytest.approx(last_eval)

    import matplotlib.image as mpimg

    image = mpimg.imread(plot)
    assert image[..., :3].var() > 0 and image.shape[1] > image.shape[0]  # two panels side by side
    assert video.stat().st_size > 1000


def test_eval_checkpoint_file_single_mode(run_dir, capsys):
    assert eval_main([str(run_dir / "checkpoints" / "final.pt"), "--mode", "stochastic", "--episodes", "2",
                      "--multigoal-rollouts", "5", "--trajectories-per-start", "1"]) == 0
    printed = capsys.readouterr().out
    assert "stochastic return:" in printed and "deterministic return:" not in printed
    assert (run_dir / "eval" / "multigoal_trajectories.png").is_file()  # default location: inside the run


def test_errors_are_one_line(tmp_path, run_dir, capsys):
    assert eval_main([str(tmp_path / "missing")]) == 2
    assert eval_main([str(run_dir), "--video", str(tmp_path / "x.avi")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("dacer2-eval: error: no run directory or checkpoint file")
    assert "must end in .gif or .mp4" in errors[1]


def test_missing_gl_backend_fails_clearly(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(RenderError, match="cannot render InvertedPendulum-v5: no working MuJoCo OpenGL backend"):
        ensure_rendering("InvertedPendulum-v5")
    assert ensure_rendering("dacer2/MultiGoal-v0") == "matplotlib"  # drawn with matplotlib, needs no GL


def test_help_documents_every_option():
    proc = subprocess.run([sys.executable, "-m", "dacer2.cli.eval", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--episodes", "--mode", "--video", "--multigoal-rollouts", "--plot", "--json-out"):
        assert flag in proc.stdout, flag


def test_cuda_without_cuda_says_so_in_one_line(run_dir, capsys, monkeypatch):
    """As dacer2-train: the missing CUDA device is the error, not an 'unreadable' checkpoint (exit code 2)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, even where CUDA exists
    assert eval_main([str(run_dir), "--device", "cuda", "--episodes", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "dacer2-eval: error: --device cuda was requested but this torch build sees no CUDA device; use --device cpu"]
