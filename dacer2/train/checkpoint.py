"""Checkpoint files: the agent's full training state plus the config, written atomically so an interrupted write
never destroys the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import re
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1  # of the payload dacer2/train/resume.py writes: a change of layout bumps it and keeps reading the old one


def _numpy_array_globals() -> list:
    """What unpickling a plain numpy array needs (RNG states and observations are stored as arrays)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.int32, np.int64, np.uint32, np.uint64, np.float32, np.float64)]
    return [_reconstruct, np.ndarray, np.dtype, *dtypes]


# Checkpoints are loaded with torch's weights-only unpickler: tensors, Python containers and numbers, and these
# numpy array types. Anything else (a class, a function) is refused, so a file from someone else cannot run code.
SAFE_GLOBALS = _numpy_array_globals()


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit what it is being loaded into."""


def _new_temp_file(path: Path) -> tuple[int, str]:
    """A new, uniquely named file beside `path`, opened for writing. Unlike tempfile.mkstemp (always 0600) it gets
    the mode open() gives any new file, 0666 less the umask, so the step checkpoints have the same permissions as
    the final.pt copied from one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def publish_copy(source: Path, destination: Path) -> Path:
    """Copy a finished checkpoint under a stable name, atomically (a reader never sees half a file)."""
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash would keep its own mode; a new file gets the usual one
    shutil.copyfile(source, tmp)
    os.replace(tmp, destination)
    return destination


_NOT_TORCH = "{path} is not a torch checkpoint (not a zip or pickle file; perhaps corrupt or truncated)"


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts as torch.save writes: a zip archive, or (the legacy format) a pickle's PROTO 2-5."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", lazy: bool = False) -> dict:
    """The checkpoint's payload. `lazy` maps the file into memory instead of reading it (CPU tensors): what the
    caller never touches, such as a saved replay buffer when only the policy is wanted, is never read from disk."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            if lazy:
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            else:
                payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler met something that is not data
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if not found and not _looks_like_torch_file(path):  # text or other bytes read as pickle opcodes
            raise CheckpointError(_NOT_TORCH.format(path=path)) from None
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects{what}, not just tensors and arrays; dacer2 never "
            "unpickles code from a checkpoint. A checkpoint written by dacer2 itself never needs this"
        ) from None
    except Exception as exc:  # truncated or not a torch file: one clear line, not a pickle traceback
        if not _looks_like_torch_file(path):
            raise CheckpointError(_NOT_TORCH.format(path=path)) from None
        raise CheckpointError(f"{path} is not a readable dacer2 checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not a dacer2 checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer dacer2 (format {payload['format_version']})")
    return payload


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); the previous ones are untouched."""


class CheckpointManager:
    """Numbered checkpoints in one folder, newest last, keeping the last `keep`. Every write is atomic, so a
    crash or a full disk mid-write leaves the earlier checkpoints intact."""

    def __init__(self, folder: Path, keep: int = 3):
        self.folder, self.keep = Path(folder), keep

    def path_for(self, env_steps: int) -> Path:
        return self.folder / f"step_{env_steps:012d}.pt"

    def saved(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    def save(self, env_steps: int, payload: dict) -> Path:
        try:
            path = save_checkpoint(self.path_for(env_steps), payload)
        except OSError as exc:
            raise CheckpointWriteError(
                f"could not write a checkpoint to {self.folder} ({exc.strerror or exc}); earlier checkpoints are intact"
            ) from exc
        for old in self.saved()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> tuple[Path, dict]:
        """The newest checkpoint that loads; a corrupt newest one falls back to the one before it."""
        problems = []
        for path in reversed(self.saved()):
            try:
                payload = load_checkpoint(path, map_location)
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            for problem in problems:  # a skipped newer checkpoint is news: the run goes back further than asked
                print(f"dacer2: skipped a checkpoint that does not load ({problem}); using {path.name}",
                      file=sys.stderr)
            return path, payload
        detail = "; ".join(problems) if problems else "none found"
        raise CheckpointError(f"no usable checkpoint in {self.folder}: {detail}")
