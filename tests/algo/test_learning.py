"""DACER2 learns a real MuJoCo task: the quick-start preset, cut short (no timing here; `make train` runs it whole).

InvertedPendulum-v5 with the quick-start preset (tau 0.02 every update, 3x64 networks, 3e-4/1e-3 rates, alpha
every 250 updates) and its full DACER2 loss, stopped at 6,000 env steps (5,000 updates). An untrained policy
balances for ~5 steps (return ~4). Measured at this point (best evaluation up to 6,000 steps, 10 episodes,
1 thread): seeds 0/1/2 reached 166/167/294 (and 1000 by 7-9k steps), so the threshold of 80 leaves about a factor
of two to the weakest seed measured while sitting 20x above the untrained policy.
"""

import torch

from dacer2.config import TrainConfig
from dacer2.train.trainer import train

REDUCED_QUICK_START = dict(total_steps=6_000, eval_every=1_000, progress=False, seed=0, torch_threads=1)
THRESHOLD = 80.0


def test_quick_start_preset_learns_inverted_pendulum(tmp_path):
    threads = torch.get_num_threads()
    try:  # a fixed thread count, whatever other test modules set before
        result = train(TrainConfig(**REDUCED_QUICK_START, run_dir=str(tmp_path / "run")))
    finally:
        torch.set_num_threads(threads)
    untrained = result.eval_history[0][1]  # evaluated at step 0
    best = max(mean for _, mean, _ in result.eval_history)
    assert untrained < 20, f"the untrained policy already scores {untrained}: the threshold would mean nothing"
    assert best >= THRESHOLD, f"eval history {result.eval_history}"
