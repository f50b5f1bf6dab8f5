"""Training configuration: one dataclass whose field docstrings are the CLI's --help, plus the algorithm and
environment presets that fill the fields a user leaves unset (None).

Every [flag] of docs/algorithm.md is a field here. Presets never override a value the user gave.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, TypeVar

import tyro

T = TypeVar("T")
# The type of an option that may stay unset (None) and then gets a value from a preset or from other options: its
# docstring says which, so tyro appends no "(default: None)" of its own. None is no command-line value (leaving the
# option out means it), so --help shows INT rather than {None}|INT, and a bool reads as a --x/--no-x flag pair.
Unset = Annotated[Optional[T], tyro.conf.DisallowNone, tyro.conf.arg(help_behavior_hint="")]

# algorithm.md §3/§5: DACER uses 20 steps and no Q-gradient loss; the ablations drop one DACER2 ingredient each.
# An algo preset fills the fields the user left unset and wins over the env preset (eta = 0 beats an env's eta).
ALGO_PRESETS: dict[str, dict] = {
    "dacer2": dict(diffusion_steps=5, temporal_weighting=True),
    "dacer": dict(diffusion_steps=20, temporal_weighting=False, eta=0.0),
    "dacer2-no-weight": dict(diffusion_steps=5, temporal_weighting=False),
    "dacer2-no-qgrad": dict(diffusion_steps=5, temporal_weighting=True, eta=0.0),
    # The SAC-style baseline: the same agent with a Gaussian head in place of the chain (dacer2/algo/heads.py). No chain
    # steps, so no L_g; its actor has no fused kernels, so it always runs the reference path.
    "gaussian": dict(diffusion_steps=5, temporal_weighting=False, eta=0.0),
}
# Values an algorithm imposes whatever the user gave, because its policy cannot use any other (recorded in
# config.json so the run says what its agent did).
ALGO_FORCED: dict[str, dict] = {"gaussian": dict(eta=0.0, backend="reference")}
Algo = Literal[tuple(ALGO_PRESETS)]  # type: ignore[valid-type]  # the CLI's choices are the preset dict's keys

# Training protocols (algorithm.md §5). An "iteration" steps every training env once, then makes the updates.
# sac: the common SAC protocol, 1 env and 1 update per env step, so iterations = env steps = updates.
# papers: what the DACER code runs and both papers plot (20 envs stepped per iteration, 1 update per iteration,
# 1.5M iterations = 30M env steps). The warm-up stays the env preset's, counted in transitions as the DACER code
# counts it (30k, 200k for Humanoid/HalfCheetah: 1,500 and 10,000 iterations). The DACER code evaluates 20 times per
# run; we evaluate every 2,500 iterations so that runs shorter than the papers' still draw a curve.
# Budgets and evaluation periods are in iterations here and become env steps (x num_envs) when resolved.
PROTOCOLS: dict[str, dict] = {
    "sac": dict(num_envs=1, updates_per_step=1, eval_every_iterations=2_000, checkpoint_every_iterations=10_000),
    # Checkpoints every 5,000 iterations: 20x the data per iteration makes a --save-buffer checkpoint 20x larger.
    "papers": dict(num_envs=20, updates_per_step=1, total_iterations=1_500_000, eval_every_iterations=2_500,
                   checkpoint_every_iterations=5_000),
}
Protocol = Literal[tuple(PROTOCOLS)]  # type: ignore[valid-type]

# Environment presets by env family (the id without its version: "Humanoid" never catches "HumanoidStandup").
# noise_scale, learning_starts, the rates and the network sizes are the papers'; eta is ours: the paper uses 1.0
# or 0.01 per task group without saying which task is which, so these are provisional until our own sweeps settle
# them (docs/guide.md, "The algorithm and our choices").
DEFAULT_ENV_PRESET = dict(
    noise_scale=0.1, learning_starts=30_000, eta=0.01, total_steps=1_000_000, actor_lr=1e-4, critic_lr=1e-4,
    alpha_every=10_000, tau=0.005, actor_hidden=(256, 256, 256), critic_hidden=(256, 256, 256),
)
ENV_PRESETS: dict[str, dict] = {
    "Humanoid": dict(noise_scale=0.15, learning_starts=200_000),
    "HalfCheetah": dict(noise_scale=0.15, learning_starts=200_000),
    # The quick start: solved (deterministic return 1000) within minutes on a 2-core CPU. The papers' schedule is
    # tuned for 1.5M iterations and barely moves in a few thousand updates, so this preset takes faster targets
    # (every update, tau 0.02), larger rates, a shorter alpha period and 3x64 networks (cheaper updates on a CPU).
    # Each value beside the paper's: docs/guide.md, "Quick start".
    "InvertedPendulum": dict(
        learning_starts=1_000, total_steps=14_000, actor_lr=3e-4, critic_lr=1e-3, alpha_every=250, target_every=1,
        tau=0.02, actor_hidden=(64, 64, 64), critic_hidden=(64, 64, 64),
    ),
    "InvertedDoublePendulum": dict(learning_starts=5_000, total_steps=200_000),
    # Multimodality needs exploration: at the papers' k = 0.1 the policy collapses onto one goal, at k = 0.3 it
    # keeps two, at k = 0.7 all four; longer training adds modes too, 60k steps gives all four on 3 of 5 seeds
    # (docs/evaluation.md, "Multimodality").
    "dacer2/MultiGoal": dict(
        learning_starts=5_000, eta=1.0, total_steps=60_000, noise_scale=0.7, actor_hidden=(64, 64, 64),
        critic_hidden=(64, 64, 64),
    ),
}


def env_family(env_id: str) -> str:
    """'Hopper-v5' -> 'Hopper', 'dacer2/MultiGoal-v0' -> 'dacer2/MultiGoal'."""
    name, sep, version = env_id.rpartition("-v")
    return name if sep and version.isdigit() else env_id


def env_preset(env_id: str) -> dict:
    return {**DEFAULT_ENV_PRESET, **ENV_PRESETS.get(env_family(env_id), {})}


@dataclass
class TrainConfig:
    """Train a DACER2 (or DACER / ablation) agent on a Gymnasium continuous-control task.

    Options left unset take their value from the --algo preset and the environment preset; the resolved
    values are written to the run directory's config.json.
    """

    # The field docstrings are the --help text. tyro joins a docstring's lines into one paragraph only where a line
    # starts at column 0 with a letter (it keeps every other line break), hence the unindented continuation lines.

    # --- experiment ------------------------------------------------------------------------------------------------
    env_id: str = "InvertedPendulum-v5"
    """Gymnasium id of a task with a bounded Box action space (e.g. Hopper-v5, HalfCheetah-v5, dacer2/MultiGoal-v0)."""
    algo: Algo = "dacer2"
    """Algorithm preset: dacer2 (T=5, Q-gradient loss, temporal weight), dacer (T=20, no Q-gradient loss), an
ablation (dacer2-no-weight: w(t)=1; dacer2-no-qgrad: eta=0), or gaussian (the SAC-style baseline: the same critics,
entropy regulator and loop with a diagonal Gaussian policy head instead of the chain)."""
    protocol: Protocol = "sac"
    """How env steps and updates interleave. An iteration steps all --num-envs training envs once, then
makes --updates-per-step updates. sac: 1 env, 1 update per iteration (iterations = env steps = updates; budget: the env
preset). papers: the DACER/DACER2 papers' protocol, 20 envs and 1 update per iteration for 1.5M iterations (30M env
steps), evaluated every 2500 iterations. Each value it sets can still be overridden, --total-steps included (100k
iterations of papers = --total-steps 2000000)."""
    total_steps: Unset[int] = None
    """Environment steps to train for, summed over the parallel envs, so iterations = this / --num-envs (default: papers
protocol 30M; sac protocol the env preset, 1M for MuJoCo locomotion, a few minutes' worth for the quick-start
InvertedPendulum-v5)."""
    seed: int = 0
    """Seed for the networks, the noise, the replay sampling and the environments."""
    num_envs: Unset[int] = None
    """Parallel training environments; each iteration steps all of them once (default: 1; papers protocol: 20)."""
    updates_per_step: Unset[int] = None
    """Gradient updates per iteration (one step of all --num-envs envs; default 1, as both protocols)."""
    vector_env: Literal["sync", "async"] = "sync"
    """How the --num-envs training envs step: sync, one after another in this process; or async, each in its own worker
process, stepping while this process makes the iteration's updates (so an iteration's updates see the buffer without
that iteration's transitions). async pays off with many envs and a fast update (a GPU)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where networks, replay buffer and updates live: auto picks cuda when available."""
    run_dir: Unset[str] = None
    """Where to write config, metrics, TensorBoard events and checkpoints; default runs/<env>__<algo>__<seed>__<time>. A
directory that already holds a run is refused: continue it with --resume, or see --overwrite."""
    overwrite: bool = False
    """Delete the run files (config, metrics, events, checkpoints, result) that --run-dir already holds, then start a
new run there. Without it such a directory is refused, so two runs never mix."""
    eval_every: Unset[int] = None
    """Evaluate the deterministic policy every this many environment steps, and at the start and the end (default:
every 2000 iterations with the sac protocol, every 2500 with papers, i.e. 50000 env steps at 20 envs)."""
    eval_episodes: int = 10
    """Episodes per evaluation, run on separate environments."""
    learning_starts: Unset[int] = None
    """Uniform-random warm-up transitions before updates start; default: the env preset (DACER: 30000, 200000 for
Humanoid/HalfCheetah), capped at a tenth of --total-steps so short runs still train. A run started short to be
extended later with --resume --total-steps should give it explicitly, or its warm-up is the short budget's."""
    log_every: int = 1_000
    """Write training metrics every this many environment steps."""
    progress: bool = True
    """Show a progress bar with steps/s and the latest returns."""
    torch_threads: Unset[int] = None
    """Number of CPU threads torch uses (default: torch's own choice)."""
    keep_freed_memory: bool = True
    """Tune glibc's malloc to keep freed memory in the process instead of returning it to the kernel, so CPU updates
stop page-faulting their working set back in (fp32 updates 1.07-1.09x faster in measured runs, same peak memory;
process-wide; docs/performance.md, "Host memory")."""
    deterministic: bool = False
    """Seed everything and use deterministic algorithms, so two runs with the same seed match (on CPU bitwise)."""

    # --- checkpoints and resume ------------------------------------------------------------------------------------
    resume: Unset[str] = None
    """Continue the run in this run directory from its newest checkpoint instead of starting a new run (its saved config
is used; only --total-steps, --progress, --torch-threads, --device, --cuda-graphs and --keep-freed-memory may be
changed)."""
    checkpoint_every: Unset[int] = None
    """Write a checkpoint every this many environment steps, also at the end and on SIGINT/SIGTERM (default: once
every 10000 iterations with the sac protocol, every 5000 with papers, i.e. 100000 env steps at 20 envs)."""
    keep_checkpoints: int = 3
    """Keep this many most recent periodic checkpoints."""
    save_buffer: bool = False
    """Also store the replay buffer in checkpoints (needed for an exact resume; large for big buffers)."""
    backend: Literal["auto", "fused", "reference"] = "auto"
    """Compute path for the diffusion chain and critic gradients: fused kernels (C++ on CPU, Triton on CUDA), the
plain-PyTorch reference, or auto (env DACER2_BACKEND if set, else fused where available)."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Matrix multiplies of the actor, the critics and the chain: fp32; bf16 (bf16 operands, fp32 accumulation; master
weights, Adam, mish, the losses and the entropy fit stay fp32; CPUs only); or auto: bf16 where the CPU multiplies bf16
natively (amx_bf16 or avx512_bf16) and a short self-check measures it faster, else fp32. config.json records the choice
and why (docs/performance.md, "bf16")."""
    precision_reason: Annotated[Optional[str], tyro.conf.Suppress] = None
    """Why the run's precision is what it is: written by the run, not an option."""
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    """Run each update (the replay sample, the critic and policy steps, Polyak) as a replayed CUDA graph, which removes
the GPU's kernel-launch overhead: auto is on with a CUDA device and off on CPU; on needs --device cuda. If a capture
fails the run says so in one line and continues eagerly (docs/performance.md, "CUDA graphs")."""

    # --- policy: reverse diffusion (algorithm.md §1) ---------------------------------------------------------------
    diffusion_steps: Unset[int] = None
    """Denoising steps T of the policy's reverse chain (default: the --algo preset, 5 for dacer2, 20 for dacer)."""
    noise_scale: Unset[float] = None
    """k in the executed action clip(x + alpha k xi) (default: the env preset: 0.1, or 0.15 for
Humanoid/HalfCheetah)."""
    deterministic_chain_noise: bool = True
    """Keep the chain's own posterior noise in the deterministic (evaluation) policy; --no-deterministic-chain-noise
zeroes it."""
    actor_hidden: Annotated[Unset[tuple[int, ...]], tyro.conf.arg(metavar="INT [INT ...]")] = None
    """Hidden layer sizes of the noise-prediction network (default: 256 256 256; 64 64 64 in the quick-start preset)."""
    critic_hidden: Annotated[Unset[tuple[int, ...]], tyro.conf.arg(metavar="INT [INT ...]")] = None
    """Hidden layer sizes of each critic (default: 256 256 256; 64 64 64 in the quick-start preset)."""
    activation: str = "mish"
    """Activation of both networks (mish, relu, gelu, silu, tanh)."""

    # --- DACER2's Q-gradient field loss (algorithm.md §3) ----------------------------------------------------------
    eta: Unset[float] = None
    """Weight of the Q-gradient field loss L_g in L_q + eta L_g (default: the env preset; forced to 0 by
dacer/dacer2-no-qgrad unless given explicitly)."""
    temporal_weighting: Unset[bool] = None
    """Use w(t) = exp(c (t+1) + d) in L_g's target; --no-temporal-weighting makes w constant 1 (default: the --algo
preset)."""
    weight_c: float = 0.4
    """c in w(t)."""
    weight_d: float = -1.8
    """d in w(t)."""
    qgrad_critic: Literal["min", "mean", "q1"] = "min"
    """Which critic mean gives the action-gradient g_t: min of the twin means, their mean, or Q1 only."""
    qgrad_stop_gradient: bool = True
    """L_g evaluates eps_theta at sg(x_t), or with --no-qgrad-stop-gradient at the chain's own x_t, letting L_g's
gradient flow into x_t."""

    # --- critic (algorithm.md §2) and optimisation (§5) ------------------------------------------------------------
    batch_size: int = 256
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity (transitions)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: Unset[float] = None
    """Polyak rate of the target critics and of the critics' running sigma statistic (default 0.005; 0.02 in the
quick-start preset)."""
    delay: int = 2
    """The policy is updated every this many updates (and the target critics too, unless --target-every is set)."""
    target_every: Unset[int] = None
    """The target critics move toward the critics (Polyak, --tau) every this many updates (default: with the policy,
every --delay updates, as in the papers; 1 in the quick-start preset)."""
    reward_scale: float = 0.2
    """Rewards are multiplied by this before the critic sees them."""
    actor_lr: Unset[float] = None
    """Adam learning rate of the noise-prediction network (default: 1e-4 as in the papers; larger in the quick-start
preset)."""
    critic_lr: Unset[float] = None
    """Adam learning rate of the critics (default: 1e-4 as in the papers; larger in the quick-start preset)."""

    # --- entropy regulator (algorithm.md §4) -----------------------------------------------------------------------
    initial_alpha: float = 3.0
    """Initial alpha of the exploration noise alpha k xi."""
    alpha_lr: float = 3e-2
    """Adam learning rate of log alpha."""
    target_entropy_scale: float = -0.9
    """Target entropy = this times the action dimension."""
    alpha_every: Unset[int] = None
    """Re-estimate the policy entropy and step alpha every this many updates, and at the first (default: 10000 as in the
papers; 250 in the quick-start preset)."""
    entropy_states: int = 256
    """States (from the replay batch) whose action distribution is fitted for the entropy estimate."""
    entropy_samples: int = 200
    """Actions drawn per state for the entropy estimate."""
    gmm_components: int = 3
    """Gaussian mixture components per state for the entropy estimate."""

    def resolved(self) -> "TrainConfig":
        """A copy with every preset-controlled field filled in and the whole config validated."""
        algo = ALGO_PRESETS[self.algo]
        env = env_preset(self.env_id)
        cfg = dataclasses.replace(self)
        for name, value in {**env, **algo}.items():
            if name not in ("learning_starts", "total_steps") and getattr(cfg, name) is None:
                setattr(cfg, name, value)
        _apply_protocol(cfg, env["total_steps"])
        for name, value in ALGO_FORCED.get(cfg.algo, {}).items():
            setattr(cfg, name, value)
        if cfg.target_every is None:  # the papers move the targets with the policy
            cfg.target_every = cfg.delay
        if cfg.learning_starts is None:  # capped so that short runs still train
            cfg.learning_starts = max(min(env["learning_starts"], cfg.total_steps // 10), cfg.batch_size)
        if cfg.precision == "auto" or cfg.precision_reason is None or cfg.cuda_graphs != "off":
            import torch

            from dacer2.algo.precision import resolve_precision

            device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            if cfg.precision == "auto" or cfg.precision_reason is None:
                cfg.precision, cfg.precision_reason = resolve_precision(cfg.precision, device)
            on_cuda = str(device).startswith("cuda")
            if cfg.cuda_graphs == "on" and not on_cuda:
                raise ValueError(f"--cuda-graphs on needs a CUDA device (graphs replay GPU work), got --device "
                                 f"{cfg.device}; use --cuda-graphs auto or off on a CPU")
            if cfg.cuda_graphs == "auto":
                cfg.cuda_graphs = "on" if on_cuda else "off"
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.total_steps is None or self.total_steps > 0, f"--total-steps must be positive, got {self.total_steps}"),
            ((self.checkpoint_every is None or self.checkpoint_every > 0) and self.keep_checkpoints > 0,
             "--checkpoint-every and --keep-checkpoints must be positive"),
            (self.num_envs is None or self.num_envs > 0, f"--num-envs must be positive, got {self.num_envs}"),
            (self.updates_per_step is None or self.updates_per_step >= 0,
             f"--updates-per-step must be >= 0, got {self.updates_per_step}"),
            (self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}"),
            (self.buffer_size >= self.batch_size, f"--buffer-size ({self.buffer_size}) is smaller than --batch-size ({self.batch_size})"),
            (self.diffusion_steps is None or self.diffusion_steps >= 1, f"--diffusion-steps must be >= 1, got {self.diffusion_steps}"),
            ((self.eval_every is None or self.eval_every > 0) and self.log_every > 0,
             "--eval-every and --log-every must be positive"),
            (self.eval_episodes >= 0, f"--eval-episodes must be >= 0, got {self.eval_episodes}"),
            (self.total_steps is None or self.learning_starts is None or self.learning_starts < self.total_steps,
             f"--total-steps {self.total_steps} ends within the warm-up of {self.learning_starts} random transitions "
             f"(--learning-starts), so the run would make no update; raise --total-steps or lower --learning-starts"),
            *((hidden is None or (len(hidden) > 0 and all(h > 0 for h in hidden)),
               f"--{name.replace('_', '-')} needs one or more positive layer sizes, got {' '.join(map(str, hidden or ())) or 'none'}")
              for name, hidden in (("actor_hidden", self.actor_hidden), ("critic_hidden", self.critic_hidden))),
            (self.delay >= 1, f"--delay must be >= 1, got {self.delay}"),
            (self.target_every is None or self.target_every >= 1, f"--target-every must be >= 1, got {self.target_every}"),
            (self.alpha_every is None or self.alpha_every >= 1, f"--alpha-every must be >= 1, got {self.alpha_every}"),
            (self.initial_alpha > 0, f"--initial-alpha must be positive, got {self.initial_alpha}"),
            (0 < self.gamma <= 1 and (self.tau is None or 0 < self.tau <= 1), "--gamma and --tau must lie in (0, 1]"),
            (self.eta is None or self.eta >= 0, f"--eta must be >= 0, got {self.eta}"),
            (self.entropy_samples > self.gmm_components, "--entropy-samples must exceed --gmm-components"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        values = dict(values)
        for key in ("actor_hidden", "critic_hidden"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def _apply_protocol(cfg: TrainConfig, env_total_steps: int) -> None:
    """Fill the loop's shape from --protocol where the user left it unset: envs, updates, budget, evaluation and
    checkpoint periods (the protocol's iteration counts become env steps at the resolved number of envs)."""
    protocol = PROTOCOLS[cfg.protocol]
    if cfg.num_envs is None:
        cfg.num_envs = protocol["num_envs"]
    if cfg.updates_per_step is None:
        cfg.updates_per_step = protocol["updates_per_step"]
    if cfg.total_steps is None:
        iterations = protocol.get("total_iterations")
        cfg.total_steps = env_total_steps if iterations is None else iterations * max(cfg.num_envs, 1)
    if cfg.eval_every is None:
        cfg.eval_every = protocol["eval_every_iterations"] * max(cfg.num_envs, 1)
    if cfg.checkpoint_every is None:
        cfg.checkpoint_every = protocol["checkpoint_every_iterations"] * max(cfg.num_envs, 1)


def iterations(env_steps: int, num_envs: int) -> int:
    """Iterations a run has made after `env_steps` (each steps all num_envs envs once)."""
    return -(-env_steps // num_envs)


def check_presets(algo_presets: dict[str, dict], env_presets: dict[str, dict], forced: dict[str, dict]) -> None:
    """Every preset key must name a TrainConfig field that a preset can fill (its default is None), so a typo or a
    field with a fixed default (say reward_scale) fails here, at import, instead of being ignored silently."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for kind, presets in (("algo", algo_presets), ("env", env_presets)):
        for preset, values in presets.items():
            for key in values:
                if key not in defaults:
                    raise ValueError(f"{kind} preset {preset!r}: {key!r} is not a TrainConfig field")
                if defaults[key] is not None:
                    raise ValueError(f"{kind} preset {preset!r}: TrainConfig.{key} defaults to {defaults[key]!r}, "
                                     "so a preset value would never apply; make its default None")
    for algo, values in forced.items():
        unknown = sorted(set(values) - set(defaults)) + ([algo] if algo not in algo_presets else [])
        if unknown:
            raise ValueError(f"forced values of algo {algo!r}: {unknown} name no TrainConfig field or algo preset")


check_presets(ALGO_PRESETS, {"default": DEFAULT_ENV_PRESET, **ENV_PRESETS}, ALGO_FORCED)
