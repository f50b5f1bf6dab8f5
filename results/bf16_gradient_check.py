"""How far --precision bf16 moves one update, measured against the noise every update already has.

For a training checkpoint (with its replay buffer), the same agent state is loaded twice, once per precision, and
each of the update's three gradients (the critic loss, L_q and L_g, with respect to the network that loss trains)
is computed on the same batch with the same random draws. Their cosine says how much bf16 changed the update's
direction. As a scale, the cosine between two different fp32 batches' gradients says how much the minibatch alone
changes it. It also reports the critic's value error and the direction error of dQ/da at the chain's visited
states, which L_g normalises to unit length.

    python results/bf16_gradient_check.py RUN_DIR/checkpoints/step_000000100000.pt [more checkpoints]

Prints one markdown table row per checkpoint (docs/performance.md, "bf16").
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from dacer2.algo.agent import DACER2Agent
from dacer2.config import TrainConfig
from dacer2.train.checkpoint import load_checkpoint
from dacer2.train.replay import Batch

BATCHES = 4  # per checkpoint; batch i is compared with batch i + 1 for the minibatch scale
LOSSES = ("critic", "L_q", "L_g")


def agent_at(payload: dict, precision: str) -> DACER2Agent:
    cfg = TrainConfig(**{**payload["config"], "precision": precision, "resume": None})
    agent = DACER2Agent(payload["obs_dim"], payload["action_dim"], cfg)
    agent.load_training_state(payload["agent"])
    return agent


def replay_batch(buffer: dict, seed: int, size: int = 256) -> Batch:
    index = torch.randint(0, buffer["obs"].shape[0], (size,), generator=torch.Generator().manual_seed(seed))
    return Batch(*(buffer[k][index] for k in ("obs", "action", "reward", "next_obs", "terminated")))


def loss_gradient(agent: DACER2Agent, batch: Batch, loss_name: str, sigma_running: torch.Tensor) -> torch.Tensor:
    """The flat gradient of one loss, with the same random draws and critic-loss state for every call."""
    agent.generator.manual_seed(1234)
    agent.sigma_running.copy_(sigma_running)
    if loss_name == "critic":
        loss, params = agent.critic_loss(batch)[0], list(agent.critic.parameters())
    elif loss_name == "L_q":
        action = agent.explore(agent.sample_policy(batch.obs))
        loss, params = -agent.critic_value(batch.obs, action, "min").mean(), list(agent.actor.parameters())
    else:
        loss = agent.qgrad_field_loss(batch.obs, agent.trace_chain(batch.obs))
        params = list(agent.actor.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])


def check(path: str) -> dict[str, float]:
    payload = load_checkpoint(path)
    fp32, bf16 = agent_at(payload, "fp32"), agent_at(payload, "bf16")
    sigma = fp32.sigma_running.clone()
    batches = [replay_batch(payload["buffer"], seed) for seed in range(BATCHES + 1)]
    row: dict[str, float] = {"env_steps": payload["env_steps"]}
    for name in LOSSES:
        same = [F.cosine_similarity(loss_gradient(fp32, b, name, sigma), loss_gradient(bf16, b, name, sigma), dim=0)
                for b in batches[:BATCHES]]
        across = [F.cosine_similarity(loss_gradient(fp32, a, name, sigma), loss_gradient(fp32, b, name, sigma), dim=0)
                  for a, b in zip(batches[:BATCHES], batches[1:])]
        row[f"{name} bf16"] = torch.stack(same).mean().item()
        row[f"{name} batches"] = torch.stack(across).mean().item()
    with torch.no_grad():
        batch = batches[0]
        q32, _ = fp32.critic(batch.obs, batch.action)
        q16, _ = bf16.critic(batch.obs, batch.action)
        row["|Q|"] = q32.abs().mean().item()
        row["Q error"] = (q16 - q32).abs().mean().item()
        visited = fp32.trace_chain(batch.obs).visited
    direction = F.cosine_similarity(fp32.action_grad(batch.obs, visited), bf16.action_grad(batch.obs, visited), dim=-1)
    row["dQ/da cos"] = direction.mean().item()
    row["dQ/da cos<0.9"] = (direction < 0.9).float().mean().item()
    return row


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    header = ["checkpoint", "env steps"] + [f"{n}: bf16 vs fp32 / batch vs batch" for n in LOSSES] + [
        "mean abs Q / bf16 error", "dQ/da direction cos (share < 0.9)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in paths:
        r = check(path)
        cells = [path.split("runs/")[-1], f"{r['env_steps']:,}"]
        cells += [f"{r[f'{n} bf16']:.3f} / {r[f'{n} batches']:.3f}" for n in LOSSES]
        cells += [f"{r['|Q|']:.1f} / {r['Q error']:.3f}", f"{r['dQ/da cos']:.3f} ({r['dQ/da cos<0.9']:.0%})"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
