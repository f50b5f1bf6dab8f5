import subprocess
import sys

from dacer2.train.checkpoint import load_checkpoint


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dacer2.cli.train", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_smoke_run_writes_config_metrics_checkpoint(tmp_path):
    proc = run_cli(
        "--env-id", "InvertedPendulum-v5", "--total-steps", "300", "--learning-starts", "100",
        "--eval-every", "150", "--eval-episodes", "2", "--actor-hidden", "16", "16", "--critic-hidden", "16", "16",
        "--batch-size", "32", "--entropy-states", "4", "--entropy-samples", "20", "--seed", "3",
        "--run-dir", str(tmp_path / "cli-run"), "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "final eval return" in proc.stdout
    run = tmp_path / "cli-run"
    assert '"seed": 3' in (run / "config.json").read_text()
    assert len((run / "metrics.csv").read_text().splitlines()) >= 3
    assert load_checkpoint(run / "checkpoints" / "final.pt")["config"]["seed"] == 3


def test_cli_help_explains_every_required_flag():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--env-id", "--algo", "--total-steps", "--seed", "--num-envs", "--device", "--run-dir",
                 "--eval-every", "--eval-episodes", "--learning-starts", "--eta", "--diffusion-steps"):
        assert flag in proc.stdout, flag
    assert "Denoising steps T" in proc.stdout


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    proc = run_cli("--env-id", "Hoper-v5", "--run-dir", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dacer2-train: error: unknown environment id 'Hoper-v5'; did you mean Hopper-v5")
    proc = run_cli("--total-steps", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--total-steps must be positive" in proc.stderr


def test_a_run_without_evaluation_says_so_instead_of_nan(tmp_path):
    proc = run_cli("--total-steps", "150", "--learning-starts", "100", "--eval-episodes", "0", "--actor-hidden", "16",
                   "--critic-hidden", "16", "--batch-size", "32", "--entropy-states", "4", "--entropy-samples", "20",
                   "--run-dir", str(tmp_path / "r"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stdout and proc.stdout.startswith("no evaluation (--eval-episodes 0) after 150 env steps")
    assert proc.stderr.startswith("dacer2-train: dacer2 on InvertedPendulum-v5")  # the start block comes first


def test_bad_layer_sizes_are_one_line_and_leave_no_run_directory(tmp_path):
    for sizes in ([], ["64", "0"]):
        proc = run_cli("--actor-hidden", *sizes, "--run-dir", str(tmp_path / "r"))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--actor-hidden needs one or more positive layer sizes" in proc.stderr
        assert not (tmp_path / "r").exists()
