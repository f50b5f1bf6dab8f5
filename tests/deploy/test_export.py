"""dacer2-export: the ONNX file, run by onnxruntime, returns the reference Policy's actions for the same noise rows
(deterministic and exploring), keeps a dynamic batch, and refuses what it cannot export."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import dacer2
from dacer2.cli.export import export_main
from dacer2.deploy.export import export_onnx

EXTRA = "the export extra is not installed (make install-ray, or pip install --no-build-isolation -e '.[export]')"
onnxruntime = pytest.importorskip("onnxruntime", reason=EXTRA)
pytest.importorskip("onnxscript", reason=EXTRA)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config):
    from dacer2.train.trainer import train

    tmp = tmp_path_factory.mktemp("export")
    cfg = tiny_config(env_id="InvertedPendulum-v5", total_steps=200, learning_starts=100, eval_every=200,
                      eval_episodes=1, alpha_every=50, run_dir=str(tmp / "run"), torch_threads=1)
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def onnx_file(run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "policy.onnx"
    assert export_main([str(run_dir), "--out", str(path)]) == 0
    return path


def policy_noise(seed, T, B, A, deterministic):
    """The noise rows a reference-backend Policy draws from its generator (dacer2/algo/acting.py): one by one, x_{T-1},
    the chain noise, then the exploration noise, which is not drawn (zero) when deterministic."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(B, A, generator=g) for _ in range(T)]
    rows.append(torch.zeros(B, A) if deterministic else torch.randn(B, A, generator=g))
    return torch.stack(rows).numpy()


# The file takes the reference backend's noise layout; a fused-backend Policy draws in-op (dacer2/algo/acting.py), so
# only the reference Policy's actions can be replayed through the file draw for draw.
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_policy_act_for_the_same_noise(run_dir, onnx_file, deterministic, batch):
    policy = dacer2.Policy.load(run_dir, backend="reference", seed=11)
    T, S, A = policy.config.diffusion_steps, policy.info.obs_dim, policy.info.action_dim
    obs = np.random.default_rng(batch).normal(size=(batch, S)).astype(np.float32)
    want = policy.act(obs, deterministic=deterministic)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["action"], {"obs": obs, "noise": policy_noise(11, T, batch, A, deterministic)})
    assert got.shape == (batch, A) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.all(np.abs(got) <= 3.0)  # InvertedPendulum's bounds, applied inside the file


def test_other_noise_gives_other_actions(run_dir, onnx_file):
    """The noise input is live: without it the match above could come from a constant graph."""
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    obs = np.zeros((4, 4), np.float32)
    a = session.run(["action"], {"obs": obs, "noise": policy_noise(1, 5, 4, 1, False)})[0]
    b = session.run(["action"], {"obs": obs, "noise": policy_noise(2, 5, 4, 1, False)})[0]
    assert not np.allclose(a, b)


def test_gaussian_policies_are_refused(tmp_path, tiny_config):
    from dacer2.train.trainer import train

    cfg = tiny_config(env_id="InvertedPendulum-v5", algo="gaussian", total_steps=120, learning_starts=100,
                      eval_every=120, eval_episodes=1, run_dir=str(tmp_path / "g"), torch_threads=1)
    policy = dacer2.Policy.load(train(cfg).run_dir, backend="reference")
    with pytest.raises(ValueError, match="exports diffusion policies"):
        export_onnx(policy, tmp_path / "g.onnx")
    assert export_main([str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")]) == 2


@pytest.mark.parametrize("check", [True, False], ids=["check", "no-check"])
def test_the_command_prints_only_its_result_line(run_dir, tmp_path, check):
    """No [torch.onnx] progress lines and no exporter warnings around the result (the check's outcome joins it)."""
    out = tmp_path / "policy.onnx"
    proc = subprocess.run([sys.executable, "-m", "dacer2.cli.export", str(run_dir), "--out", str(out),
                           *([] if check else ["--no-check"])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out} (InvertedPendulum-v5"), proc.stdout
    assert ("onnxruntime check: max |difference|" in lines[0]) == check
    assert out.stat().st_size > 1000
