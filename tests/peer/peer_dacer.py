"""What the optional peer tests share: whether the official DACER (JAX/haiku) checkout and the `peer` extra are
available, and importing DACER from that checkout at run time.

DACER (github.com/happy-yan/DACER-Diffusion-with-Online-RL) carries no licence, so nothing of it is copied into
this repository: the checkout that DACER2_PEER_DACER points at is put on sys.path and only read. The checks mirror
benchmarks/test_bench_peer_dacer.py's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

ENV_VAR = "DACER2_PEER_DACER"
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# Import names of what DACER's update path imports (relax.algorithm.dacer and its imports), with their pip names.
PEER_MODULES = dict(jax="jax", optax="optax", haiku="dm-haiku", numpyro="numpyro", dill="dill")
# DACER's relax/utils/persistence.py names jax.core.ClosedJaxpr (deprecated in jax 0.5, removed in 0.6).
CLOSED_JAXPR_WARNING = "ignore:jax.core.ClosedJaxpr is deprecated:DeprecationWarning"


def peer_unavailable() -> str | None:
    """Why the peer tests cannot run here, or None when they can."""
    root = os.environ.get(ENV_VAR)
    if not root:
        return f"{ENV_VAR} is not set: point it at a local DACER checkout (docs/performance.md, 'Peer: DACER (JAX)')"
    if not (Path(root) / "relax" / "algorithm" / "dacer.py").is_file():
        return f"{ENV_VAR}={root} has no relax/algorithm/dacer.py: not a DACER checkout"
    missing = [pip for mod, pip in PEER_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        return f"DACER's update needs {', '.join(missing)}: pip install -e .[peer]"
    return None


def import_peer() -> SimpleNamespace:
    """jax and the DACER pieces the tests call, imported from the checkout."""
    # XLA reads its flags when jax initialises its backend, so they only apply if this is the first `import jax`.
    # One thread keeps the CPU to ourselves; the CPU platform keeps float32 matmuls exact-precision (no TF32).
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_SINGLE_THREAD}".strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    root = str(Path(os.environ[ENV_VAR]).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    import jax
    import jax.numpy as jnp
    import relax.algorithm.dacer as dacer_algorithm
    from relax.network.blocks import scaled_sinusoidal_encoding
    from relax.network.dacer import create_dacer_net
    from relax.utils.diffusion import GaussianDiffusion
    from relax.utils.experience import Experience

    def mish(x):  # the activation DACER's scripts/train_mujoco.py hands create_dacer_net
        return x * jnp.tanh(jax.nn.softplus(x))

    return SimpleNamespace(
        jax=jax, jnp=jnp, algorithm_module=dacer_algorithm, DACER=dacer_algorithm.DACER,
        create_dacer_net=create_dacer_net, Experience=Experience, GaussianDiffusion=GaussianDiffusion,
        scaled_sinusoidal_encoding=scaled_sinusoidal_encoding, mish=mish,
    )
