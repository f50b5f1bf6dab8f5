"""The training loop's own overhead: how much of a training run is not gradient updates.

One train() run on HalfCheetah-v5 per backend and thread count (1 and --bench-threads): a uniform-random warm-up of
one batch, then one update per env step, no evaluation. The loop's phase clock (dacer2/train/phase_times.py, the
`time_breakdown` of the run's result) splits the run into the updates and everything else, so two rows come
from the same run:

- `train loop / env steps/s`: the update phase end to end (acting, env stepping, replay, updates, logging),
  without the one update that also fits the entropy: in a real run that fit happens once per alpha_every
  (10,000) updates, here once in a few hundred, so it is reported separately in the note, amortized.
- `train loop / update only`: the same run's gradient updates alone.

Their ratio is the loop overhead the note states (issue 13 asks for at most 10%).
"""

import pytest
import torch

WARMUP = 256  # one batch of random transitions
UPDATES, QUICK_UPDATES = 150, 20
ALPHA_EVERY = 10_000  # the locomotion presets' entropy-fit interval


def run_loop(bench, case, tmp_path, smoke, quick):
    from dacer2.config import TrainConfig
    from dacer2.train.phase_times import describe
    from dacer2.train.trainer import train

    updates = QUICK_UPDATES if (smoke or quick) else UPDATES
    cfg = TrainConfig(
        env_id="HalfCheetah-v5",
        total_steps=WARMUP + updates,
        learning_starts=WARMUP,
        eval_episodes=0,
        eval_every=10**9,
        log_every=50,
        checkpoint_every=10**9,
        progress=False,
        torch_threads=torch.get_num_threads(),  # the bench fixture set the row's thread count
        device=case.device,
        backend="fused" if case.backend == "fused" else "reference",
        run_dir=str(tmp_path / "run"),
    )
    threads = torch.get_num_threads()
    results = []
    try:
        bench.run(lambda: results.append(train(cfg)), rounds=1, warm=False, measure_memory=False, op="train loop",
                  mode="whole run", T=5, B=256, work=cfg.total_steps, work_unit="steps/s")
    finally:
        torch.set_num_threads(threads)  # train() sets the process-wide count
    breakdown = results[-1].time_breakdown
    seconds = breakdown["seconds"]
    assert seconds["entropy"] > 0 and seconds["update"] > 0  # the first update fits the entropy; the rest learn
    loop_s = breakdown["total_s"] - seconds["entropy"]
    update_s, learning_updates = seconds["update"], updates - 1
    overhead = 1.0 - update_s / loop_s
    fit_share = seconds["entropy"] / (ALPHA_EVERY * update_s / learning_updates + seconds["entropy"])
    note = (f"loop overhead {overhead:.1%} of the update phase; entropy fit {seconds['entropy']:.2f} s, "
            f"{fit_share:.2%} amortized over {ALPHA_EVERY} updates; whole run: {describe(breakdown)}")
    print(f"\n{case.backend} {threads} thread(s): {note}")
    bench.derived(op="train loop", mode="env steps/s", seconds=loop_s, work=updates, work_unit="steps/s",
                  note=note, T=5, B=256, headline=True)
    bench.derived(op="train loop", mode="update only", seconds=update_s, work=learning_updates,
                  work_unit="updates/s", note=note, T=5, B=256, headline=True)


@pytest.mark.bench_grid(axes=(), backends=("eager", "fused"), threads=1)
def test_loop_overhead_1_thread(bench, case, tmp_path, smoke, request):
    run_loop(bench, case, tmp_path, smoke, request.config.option.bench_quick)


@pytest.mark.bench_grid(axes=(), backends=("eager", "fused"), threads="option")
def test_loop_overhead_bench_threads(bench, case, tmp_path, smoke, request):
    run_loop(bench, case, tmp_path, smoke, request.config.option.bench_quick)
