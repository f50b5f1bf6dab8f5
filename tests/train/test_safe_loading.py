"""Checkpoints are loaded with torch's weights-only unpickler: a file that smuggles code is refused with one line
and its code never runs, through every door a user opens (Policy.load, dacer2-eval, dacer2-train --resume)."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from dacer2.train.checkpoint import CheckpointError, load_checkpoint
from dacer2.config import TrainConfig
from dacer2.train.trainer import train


class Payload:
    """Unpickling this calls os.system: the classic way a pickle runs code on the machine that loads it."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config):
    run = tmp_path_factory.mktemp("safe") / "run"
    train(tiny_config(total_steps=150, learning_starts=100, eval_every=150, eval_episodes=1, alpha_every=100,
                      run_dir=str(run)))
    return run


def poisoned_copy(run_dir, tmp_path):
    """The run with every checkpoint replaced by a valid-looking one that carries a code-running object."""
    target = tmp_path / "poisoned"
    shutil.copytree(run_dir, target)
    marker = tmp_path / "payload-ran"
    for ckpt in (target / "checkpoints").glob("*.pt"):
        payload = load_checkpoint(ckpt)
        payload["config"]["total_steps"] = 300
        payload["evil"] = Payload(f"touch {marker}")
        torch.save(payload, ckpt)
    return target, marker


def test_the_payload_would_run_under_a_plain_unpickler(run_dir, tmp_path):
    """The test's own check: the poisoned file really runs its command when loaded without protection."""
    target, marker = poisoned_copy(run_dir, tmp_path)
    torch.load(target / "checkpoints" / "final.pt", weights_only=False)
    assert marker.exists()


def run_python(code: str):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("door", ["Policy.load", "dacer2-eval", "--resume"])
def test_a_checkpoint_that_carries_code_is_refused_and_never_runs(run_dir, tmp_path, door):
    target, marker = poisoned_copy(run_dir, tmp_path)
    code = {
        "Policy.load": f"import dacer2; dacer2.Policy.load({str(target)!r})",
        "dacer2-eval": f"import sys; from dacer2.cli.eval import eval_main; sys.exit(eval_main([{str(target)!r}]))",
        "--resume": f"import sys; from dacer2.cli.train import train_main; sys.exit(train_main(['--resume', {str(target)!r}]))",
    }[door]
    proc = run_python(code)
    assert proc.returncode != 0
    assert not marker.exists(), "the checkpoint's code ran"
    assert "refused to load" in proc.stderr and "posix.system" in proc.stderr
    if door != "Policy.load":  # the CLIs say it in one line, without a traceback
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_refusal_is_a_checkpoint_error_naming_the_object(run_dir, tmp_path):
    target, marker = poisoned_copy(run_dir, tmp_path)
    with pytest.raises(CheckpointError, match=r"refused to load .*final\.pt: it holds Python objects \(posix\.system\)"):
        load_checkpoint(target / "checkpoints" / "final.pt")
    assert not marker.exists()


def test_what_dacer2_writes_loads_without_unpickling_code(run_dir):
    payload = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    assert payload["env_steps"] == 150 and "mjstate" in payload["envs"][0]  # MuJoCo state as a tensor, no pickle
    assert TrainConfig.from_dict(payload["config"]).env_id == "InvertedPendulum-v5"


@pytest.mark.parametrize("content", ["model weights\n", '{"step": 200}\n', "x", "# notes\n", "hello world\n", ""])
def test_a_file_that_is_no_torch_file_is_called_that_not_python_objects(tmp_path, content):
    """A text (or empty) file named .pt is neither a zip archive nor a pickle: say so, not that it carries code."""
    path = tmp_path / "final.pt"
    path.write_text(content)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message == f"{path} is not a torch checkpoint (not a zip or pickle file; perhaps corrupt or truncated)"
    assert "Python objects" not in message and "refused" not in message
