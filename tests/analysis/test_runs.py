"""dacer2/analysis/runs.py: reading run directories and judging them at a budget."""

import numpy as np

from dacer2.analysis.runs import load_run
from tests.run_dirs import fake_run


def test_a_run_cut_at_a_budget_is_judged_on_that_budget_alone(tmp_path):
    # 20 envs per iteration: evaluations every 2,500 iterations (50,000 env steps), at 2,500 .. 15,000 iterations.
    run_dir = fake_run(tmp_path, "HalfCheetah-v5__dacer2__0", "HalfCheetah-v5", "dacer2", 0,
                       [10, 900, 1000, 2000, 3000, 4000], step=50_000)
    run = load_run(run_dir)
    run.num_envs = 20
    cut = run.until(7_500)
    np.testing.assert_array_equal(cut.eval_iterations, [2_500, 5_000, 7_500])
    assert cut.final_return == 1000 and cut.last_return == 1000  # not the 4000 of later
    assert run.final_return == 4000 and run.eval_steps.size == 6  # the run itself is untouched
    assert run.until(1_000).eval_steps.size == 0
