"""What a run says before it works: the start block (run dir, compute, budget) and the projected finish time."""

import pytest

from dacer2.config import TrainConfig
from dacer2.train.announce import (FinishProjection, crowded_threads_note, duration, other_running_threads,
                                   planned_updates, start_block)
from dacer2.train.trainer import train


@pytest.mark.parametrize("num_envs, updates_per_step, learning_starts, total", [(1, 1, 100, 300), (2, 2, 100, 300),
                                                                               (3, 1, 50, 301), (1, 1, 10, 100)])
def test_planned_updates_are_the_updates_a_run_makes(tmp_path, tiny_config, num_envs, updates_per_step,
                                                     learning_starts, total):
    cfg = tiny_config(env_id="InvertedPendulum-v5", total_steps=total, learning_starts=learning_starts,
                      num_envs=num_envs, updates_per_step=updates_per_step, eval_episodes=0, alpha_every=1000,
                      run_dir=str(tmp_path / "r"))
    result = train(cfg)
    assert planned_updates(cfg.resolved()) == result.updates > 0
    assert planned_updates(cfg.resolved(), from_env_steps=result.env_steps) == 0


def test_start_block_says_where_what_and_how_much(tmp_path, tiny_config, capsys):
    train(tiny_config(env_id="InvertedPendulum-v5", protocol="papers", num_envs=4, total_steps=400,
                      learning_starts=100, eval_episodes=0, run_dir=str(tmp_path / "r"), device="auto",
                      backend="reference"))
    block = capsys.readouterr().err
    assert f"tensorboard --logdir {tmp_path / 'r'}" in block
    assert "cpu, reference backend, fp32 GEMMs" in block
    assert "400 env steps = 100 iterations of 4 envs (1 update each)" in block and "protocol papers" in block
    assert "76 updates after a warm-up of 100 random transitions (25 iterations)" in block


def test_the_finish_is_projected_once_after_the_first_updates():
    cfg = TrainConfig(env_id="Hopper-v5", total_steps=10_000, num_envs=2).resolved()
    projection = FinishProjection(after=3)
    lines = [projection.observe(cfg, steps, max(0, (steps - 1000) // 2)) for steps in range(1000, 1040, 2)]
    said = [line for line in lines if line]
    assert len(said) == 1 and "3 updates in" in said[0] and "4,496 more iterations" in said[0]


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (45, 600, 3600 * 3 + 300)] == ["45 s", "10 min", "3 h 05 min"]


def test_threads_beyond_the_free_cores_of_a_busy_machine_are_named_with_the_fix():
    # Two trainings on 2 cores, a third run at 2 threads: it says so, and what to pass instead.
    note = crowded_threads_note(2, busy=2, cores=2)
    assert "2 other running threads on 2 cores" in note and "--torch-threads 1" in note
    assert crowded_threads_note(16, busy=4, cores=16).endswith("--torch-threads 12 is faster beside other work")
    # Threads that fit the free cores, or an idle machine, say nothing.
    assert crowded_threads_note(1, busy=2, cores=2) is None
    assert crowded_threads_note(12, busy=4, cores=16) is None
    assert crowded_threads_note(2, busy=0, cores=2) is None


def test_busy_means_running_now_not_the_last_minutes_load():
    # /proc/loadavg: a load average of 1.4 left by a compile that has ended, and only this reader running now.
    just_installed = "1.40 1.05 1.61 1/121 15398"
    assert other_running_threads(samples=3, pause=0, read=lambda: just_installed) == 0
    # Two trainings running; one sample caught a third process for a moment: the fewest of the samples counts.
    readings = iter(["0.8 1 1 3/121 1", "0.8 1 1 4/121 1", "0.8 1 1 3/121 1"])
    assert other_running_threads(samples=3, pause=0, read=lambda: next(readings)) == 2
    assert other_running_threads(read=lambda: "garbled") is None
