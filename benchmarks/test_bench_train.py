"""Environment steps per second of a fixed short training run on HalfCheetah-v5: 300 env steps, the first 100
uniform-random, then one update per step (200 updates, the first of which also re-estimates the entropy), --bench-threads
torch threads (default 2), no evaluation (eval_episodes=0, so the rate is collection + learning only). The figure a user
sees as `sps` in the progress bar, for the two agent backends; the train() entry point has no compile switch,
so there is no compile row.
"""

import pytest
import torch

TOTAL_STEPS, LEARNING_STARTS = 300, 100


@pytest.mark.bench_grid(axes=(), backends=("eager", "fused"), threads="option")
def test_train_sps(bench, case, tmp_path, smoke, request):
    from dacer2.config import TrainConfig
    from dacer2.train.trainer import train

    total = TOTAL_STEPS if not (smoke or request.config.option.bench_quick) else LEARNING_STARTS + 20
    cfg = TrainConfig(
        env_id="HalfCheetah-v5",
        total_steps=total,
        learning_starts=LEARNING_STARTS,
        eval_episodes=0,
        eval_every=10**9,
        log_every=10**9,
        progress=False,
        torch_threads=torch.get_num_threads(),  # the bench fixture set --bench-threads (1 in smoke runs)
        device=case.device,
        backend="fused" if case.backend == "fused" else "reference",
        run_dir=str(tmp_path / "run"),
    )
    threads = torch.get_num_threads()
    try:
        bench.run(lambda: train(cfg), rounds=1, warm=False, measure_memory=False, op="train", mode=f"{total} steps",
                  T=5, B=256, work=total, work_unit="steps/s", headline=True)
    finally:
        torch.set_num_threads(threads)  # train() sets the process-wide count
