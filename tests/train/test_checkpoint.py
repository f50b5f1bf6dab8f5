"""Checkpoint files on disk: the step checkpoints (written atomically through a temporary file) and the published
final.pt get the same permissions, those open() gives any new file."""

import os

import pytest
import torch

from dacer2.train.checkpoint import CheckpointManager, load_checkpoint, publish_copy


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=oct)
def test_step_checkpoints_and_final_have_the_users_file_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        manager = CheckpointManager(tmp_path / "checkpoints")
        step = manager.save(200, {"loop": {"env_steps": 200}, "w": torch.ones(3)})
        final = publish_copy(step, tmp_path / "checkpoints" / "final.pt")
        plain = tmp_path / "plain_file"
        plain.write_bytes(b"")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (step, final, plain)}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask), {k: oct(v) for k, v in modes.items()}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["final.pt", step.name]  # no temp file left
    assert load_checkpoint(final)["loop"]["env_steps"] == 200
