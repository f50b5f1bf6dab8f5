"""Deployment API: `Policy.load(path)` then `policy.act(obs)`, numpy in, numpy out, in the environment's own
action bounds.

Only what acting needs is built and loaded: the run's policy head (dacer2/algo/heads.py) with its actor and
log_alpha. No critics, replay buffer or optimisers, so a checkpoint's training state is never materialised as
modules. The Policy acts through the head, exactly as the training agent does.

Randomness comes from `policy.generator` (a torch.Generator seeded by `Policy.load(..., seed=...)` or
`policy.seed(...)`), drawn in the backend's noise layout, the training agent's (dacer2/algo/acting.py): with the same
seed and backend, `Policy.act` returns the actions `agent.act` returns. The reference layout is that of a
dacer2-export file's `noise` input; the fused backend draws in-op, so the two backends agree in distribution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dacer2.train.checkpoint import CheckpointError, load_checkpoint
from dacer2.config import TrainConfig

DIFFUSION = "diffusion"


def select_backend(name: str, family: str, device: torch.device | str = "cpu", activation: str = "mish") -> str:
    """"fused" or "reference" for this policy: the named one (checked) or, for "auto", the fastest available. Only
    the diffusion head has fused kernels; build_head refuses "fused" for the others."""
    from dacer2.ops import resolve_backend

    backend = resolve_backend(name, device, activation)  # also rejects an unknown name
    return backend if family == "diffusion" or name == "fused" else "reference"


class PolicyInputError(ValueError):
    """The observation given to Policy.act has the wrong shape or is not finite."""


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run directory's checkpoints/final.pt (else its newest checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        final = path / "checkpoints" / "final.pt"
        if final.is_file():
            return final
        candidates = sorted((path / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime)
        if candidates:
            return candidates[-1]
        raise CheckpointError(f"{path} has no checkpoints/*.pt: is it a finished dacer2 run directory?")
    raise CheckpointError(f"no run directory or checkpoint file at {path}")


@dataclass
class PolicyInfo:
    env_id: str
    policy_family: str
    obs_dim: int
    action_dim: int
    env_steps: int
    checkpoint: Path
    backend: str
    precision: str = "fp32"  # of the acting GEMMs, Policy.load's `precision`, not necessarily the training run's


class Policy:
    def __init__(self, head, info: PolicyInfo, low: np.ndarray, high: np.ndarray, config: TrainConfig,
                 device: torch.device, generator: torch.Generator, seed: int = 0):
        self.head = head  # a dacer2.algo.heads head, attached to `generator`
        self._act = head.act
        self.info = info
        self.config = config
        self.device = device
        self.action_low = np.asarray(low, dtype=np.float64)
        self.action_high = np.asarray(high, dtype=np.float64)
        if self.action_low.shape != (info.action_dim,) or self.action_high.shape != (info.action_dim,):
            raise ValueError(f"action bounds must have shape ({info.action_dim},), got {self.action_low.shape}")
        self.generator = generator
        self.generator.manual_seed(seed)
        # [-1, 1] -> [low, high] (the inverse of the RescaleAction wrapper trained behind) as a float32 multiply-add.
        self._half_range = ((self.action_high - self.action_low) / 2.0).astype(np.float32)
        self._centre = ((self.action_high + self.action_low) / 2.0).astype(np.float32)
        self._low32, self._high32 = self.action_low.astype(np.float32), self.action_high.astype(np.float32)
        self._centred = bool(np.all(self._centre == 0.0))  # symmetric bounds (most MuJoCo tasks): no shift
        self._on_cpu = self.device.type == "cpu"

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        backend: str = "auto",
        seed: int = 0,
        action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        precision: str = "fp32",
    ) -> "Policy":
        """Load from a run directory or a checkpoint file.

        `action_bounds` overrides the env's bounds (default: looked up from the stored env id, which needs that
        env to be installed); `backend="auto"` picks the fastest inference backend available; `precision` is that
        of the acting GEMMs (fp32, bf16 or auto, as dacer2-train's --precision), whatever the run trained with.
        """
        from dacer2.train.training_run import resolve_device

        device = str(resolve_device(str(device)))  # a CUDA request without CUDA is said as such, not as a bad file
        ckpt = find_checkpoint(path)
        payload = load_checkpoint(ckpt, lazy=True)  # mapped, not read: a saved replay buffer stays on disk
        try:
            config = TrainConfig.from_dict(payload["config"])
            obs_dim, action_dim = int(payload["obs_dim"]), int(payload["action_dim"])
            modules = payload["agent"]["modules"]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{ckpt} lacks {exc} needed to build a policy") from exc
        family = payload.get("policy_family", DIFFUSION)
        from dacer2.algo.heads import HEADS, build_head

        if family not in HEADS:
            raise CheckpointError(f"{ckpt}: unknown policy family {family!r} (known: {', '.join(HEADS)})")
        name = select_backend(backend, family, device, config.activation)
        from dacer2.algo.precision import resolve_precision

        config = dataclasses.replace(config, precision=resolve_precision(precision, device)[0])
        head = build_head(family, obs_dim, action_dim, config, name)
        try:
            head.actor.load_state_dict({k[len("actor."):]: v for k, v in modules.items() if k.startswith("actor.")})
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt}: actor weights do not fit the stored config ({exc})") from exc
        head.actor.to(device).eval().requires_grad_(False)
        generator = torch.Generator(device)
        head.attach(modules["log_alpha"].detach().to(device), generator)
        if action_bounds is None:
            from dacer2.envs import action_bounds as env_action_bounds

            action_bounds = env_action_bounds(config.env_id)
        info = PolicyInfo(config.env_id, family, obs_dim, action_dim, int(payload.get("env_steps", 0)), ckpt, name,
                          config.precision)
        return cls(head, info, action_bounds[0], action_bounds[1], config, torch.device(device), generator, seed)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    # ------------------------------------------------------------------------------------------------------
    def act_normalized(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Batch of states [N, S] (tensor) -> actions in [-1, 1]: for code that steps rescaled envs."""
        return self._act(obs, deterministic)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """obs: [S] or [N, S] -> action [A] or [N, A] (float32) within the env's action bounds."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.info.obs_dim:
            raise PolicyInputError(
                f"observation must have shape [{self.info.obs_dim}] or [N, {self.info.obs_dim}] for "
                f"{self.info.env_id}, got {list(x.shape)}"
            )
        # NaN and inf reach the sum (a huge finite sum only costs the exact check); math.isfinite on the scalar is
        # ~1 us cheaper than the numpy ufunc.
        if not math.isfinite(x.sum()):
            finite = np.isfinite(x.reshape(-1, self.info.obs_dim))
            if finite.all():
                return self._act_checked(x, single, deterministic)
            bad = np.argwhere(~finite)[0].tolist()
            raise PolicyInputError(f"observation contains NaN or inf (first at row {bad[0]}, index {bad[1]})")
        return self._act_checked(x, single, deterministic)

    def _act_checked(self, x: np.ndarray, single: bool, deterministic: bool) -> np.ndarray:
        batch = torch.from_numpy(x.reshape(1, -1) if single else x)
        if self._on_cpu:
            action = self._act(batch, deterministic).numpy()
        else:
            action = self._act(batch.to(self.device), deterministic).cpu().numpy()
        # In place: ufuncs cost ~1 us each at batch 1, np.clip several. The clip guards rounding at the bounds
        # (the chain's last posterior step need not land exactly inside [-1, 1]).
        np.multiply(action, self._half_range, out=action)
        if not self._centred:
            np.add(action, self._centre, out=action)
        np.maximum(action, self._low32, out=action)
        np.minimum(action, self._high32, out=action)
        return action[0] if single else action

    def __repr__(self) -> str:
        i = self.info
        return (f"Policy({i.policy_family}, env={i.env_id}, obs_dim={i.obs_dim}, action_dim={i.action_dim}, "
                f"env_steps={i.env_steps}, backend={i.backend}, precision={i.precision})")
