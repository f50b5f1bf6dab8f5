"""A trained diffusion policy as one ONNX file that runs without dacer2 (or torch) installed.

The file holds the whole acting computation, the T-step reverse chain unrolled, the exploration noise and the
rescaling to the env's action bounds:

    inputs   obs [B, S] float32, noise [T + 1, B, A] float32
    output   action [B, A] float32, within the env's bounds

`noise` is explicit so the caller owns the randomness (and a robot's control loop stays deterministic when it
wants to): row 0 is the chain's initial sample x_{T-1}, rows 1..T-1 the chain noise of steps T-1..1, row T the
exploration noise, the reference backend's layout (dacer2/algo/acting.py). Draw all rows from N(0, 1) to act like
`Policy.act(obs, deterministic=False)`; set row T to zero for `deterministic=True` (which keeps the chain noise, as
training's evaluation does); set rows 1..T to zero as well for a fully deterministic chain. Drawn row by row from
a generator with the reference Policy's seed, the rows give that Policy's action.

    dacer2-export runs/InvertedPendulum-v5__dacer2__0 --out policy.onnx

needs the `export` extra (onnx, onnxscript; onnxruntime to run and check the file). The command line is in
dacer2/cli/export.py.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dacer2.algo.acting import act_from_noise
from dacer2.algo.diffusion import ReverseChain
from dacer2.algo.networks import NoisePredictor

ONNX_OPSET = 18  # the first opset with a Mish operator


class UnrolledPolicy(nn.Module):
    """The acting computation with explicit noise (dacer2.algo.acting.act_from_noise, as every reference-backend action),
    then the rescaling to [low, high]. The step embeddings and alpha are constants of the exported graph."""

    def __init__(self, actor: NoisePredictor, chain: ReverseChain, alpha_scale: float, low: np.ndarray,
                 high: np.ndarray):
        super().__init__()
        self.actor, self.chain = actor, chain
        with torch.no_grad():
            self.register_buffer("step_emb", actor.step_embeddings(chain.num_steps).detach().clone())
        self.alpha_scale = float(alpha_scale)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        action = act_from_noise(self.actor, self.chain, obs, noise, self.alpha_scale, step_emb=self.step_emb)
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)


def unrolled_policy(policy) -> UnrolledPolicy:
    """The exportable module of a loaded dacer2.Policy (diffusion policies only): its head's actor and chain."""
    if policy.info.policy_family != "diffusion":
        raise ValueError(f"dacer2-export exports diffusion policies; this run's policy is {policy.info.policy_family}")
    head = policy.head
    alpha_scale = float(head.log_alpha.exp()) * policy.config.noise_scale
    return UnrolledPolicy(head.actor, head.chain, alpha_scale, policy.action_low, policy.action_high).eval()


def export_onnx(policy, path: str | Path) -> tuple[Path, UnrolledPolicy]:
    """Write `policy` as ONNX with a dynamic batch dimension; returns the path and the exported module."""
    module = unrolled_policy(policy)
    T, S, A = module.chain.num_steps, policy.info.obs_dim, policy.info.action_dim
    example = (torch.zeros(2, S), torch.zeros(T + 1, 2, A))
    batch = torch.export.Dim("batch", min=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(module, example, dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                                    input_names=["obs", "noise"], output_names=["action"],
                                    dynamic_shapes={"obs": {0: batch}, "noise": {1: batch}})
        program.save(str(path))
    return path, module


# What torch.onnx's exporter says on every export of this module that tells its user nothing: its registry skipping
# torchvision's ops (logged), torch.export's own use of a deprecated pytree API, and the note that obs and noise
# share the batch Dim (as they are meant to). Real failures still raise; other warnings still show.
_EXPORTER_NOISE = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints"),
)
_EXPORTER_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the known exporter noise above for the duration of one export (verbose=False ends its progress
    lines): dacer2-export prints its one result line, not a page of torch internals."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category, message in _EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def check_with_onnxruntime(module: UnrolledPolicy, path: Path, batch: int = 3, seed: int = 0) -> float:
    """Largest |difference| between the ONNX file under onnxruntime and the module it was exported from."""
    import onnxruntime

    T, A = module.chain.num_steps, module.actor.action_dim
    S = module.actor.obs_dim
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((batch, S)).astype(np.float32)
    noise = rng.standard_normal((T + 1, batch, A)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["action"], {"obs": obs, "noise": noise})
    with torch.no_grad():
        want = module(torch.from_numpy(obs), torch.from_numpy(noise)).numpy()
    return float(np.abs(got - want).max())
