"""results/build_page.py: docs/results.md's generated block from committed run files (fake ones here)."""

import csv
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.run_dirs import fake_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def page_builder(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("build_page", ROOT / "results" / "build_page.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_page", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "FIGURES", tmp_path / "docs" / "figures")
    monkeypatch.setattr(module, "PAGE", tmp_path / "docs" / "results.md")
    monkeypatch.setattr(module, "EVALUATION_PAGE", tmp_path / "docs" / "evaluation.md")
    monkeypatch.setattr(module, "MULTIGOAL_RUNS", tmp_path / "results" / "multigoal" / "runs")
    monkeypatch.setattr(module, "PERFORMANCE_PAGE", tmp_path / "docs" / "performance.md")
    module.PAGE.parent.mkdir(parents=True)
    module.PAGE.write_text(f"# hand-written intro\n\n{module.BEGIN}\nstale\n{module.END}\n\nhand-written outro\n")
    module.EVALUATION_PAGE.write_text(f"intro\n{module.MG_BEGIN}\nstale\n{module.MG_END}\noutro\n")
    return module


def regenerated(builder, page, begin, end):
    """Write `page` with a stale generated block between hand-written text, run the builder, and return the page
    after checking that only the block changed."""
    page.write_text(f"intro\n{begin}\nstale\n{end}\noutro\n")
    assert builder.main() == 0
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    return text


def test_multigoal_table_from_eval_reports(page_builder):
    def report(counts, coverage):
        return {"counts": dict(zip(("right", "left", "up", "down"), counts)), "coverage": coverage}

    # Folder names are free: the policy and seed come from each run's config.json.
    for folder, algo, seed, det, cov in [("a", "dacer2", 0, (50, 50, 50, 50), 4),
                                         ("b__long", "dacer2", 1, (100, 100, 0, 0), 2),
                                         ("gaussian__0", "gaussian", 0, (0, 0, 200, 0), 1)]:
        run = page_builder.MULTIGOAL_RUNS / folder
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"algo": algo, "seed": seed}))
        (run / "trajectories.png").write_bytes(folder.encode())
        (run / "eval.json").write_text(json.dumps({
            "env_steps": 60_000, "returns": {"deterministic": {"mean": -200.0}},
            "multigoal": {"deterministic": report(det, cov), "stochastic": report((50, 50, 50, 50), 4)}}))
    (page_builder.MULTIGOAL_RUNS / "b__long" / "eval_30k.json").write_text(json.dumps(
        {"multigoal": {"deterministic": report((200, 0, 0, 0), 1)}}))
    text = regenerated(page_builder, page_builder.EVALUATION_PAGE, page_builder.MG_BEGIN, page_builder.MG_END)
    assert "| dacer2 | 1 | 60k | 100/100/0/0 (2/4) | 50/50/50/50 (4/4) | 200/0/0/0 (1/4) | -200.0 |" in text
    assert "**dacer2**: all four goals deterministically on 1 of 2 seeds" in text
    assert "**gaussian**: all four goals deterministically on 0 of 1 seeds; deterministic coverage 1-1" in text
    assert (page_builder.FIGURES / "multigoal_k07_dacer2_seed0.png").read_bytes() == b"a"
    assert (page_builder.FIGURES / "multigoal_k07_gaussian_seed0.png").read_bytes() == b"gaussian__0"


def finished_run(root, algo, seed, returns):
    run = fake_run(root, f"Hopper-v5__{algo}__{seed}", "Hopper-v5", algo, seed, returns, step=10_000)
    (run / "result.json").write_text(json.dumps({"env_steps": 10_000 * len(returns)}))
    return run


def test_page_tables_verdicts_and_missing_rows(page_builder):
    runs = page_builder.RESULTS / "hopper-100k" / "runs"
    for seed, (high, low) in enumerate([(900, 100), (1000, 120), (950, 90)]):
        finished_run(runs, "dacer2", seed, [10, 500, high])
        finished_run(runs, "gaussian", seed, [10, 50, low])
    fake_run(runs, "Hopper-v5__dacer2-no-qgrad__0", "Hopper-v5", "dacer2-no-qgrad", 0, [10, 20])  # still running: no result.json

    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    assert text.startswith("# hand-written intro") and text.rstrip().endswith("hand-written outro")
    assert "stale" not in text
    # The papers' metric: the best evaluation in the last 10%, mean +- sample std over seeds.
    # Mean over training: trapezoid area over the span; [10, 500, 900] at 10k spacing -> (255 + 700) / 2 = 477.5.
    areas = [(255 + (500 + high) / 2) / 2 for high in (900, 1000, 950)]
    assert f"| dacer2 | 3 | 950 +- 50 | 0: 900, 1: 1000, 2: 950 | {np.mean(areas):.0f} +- {np.std(areas, ddof=1):.0f} | 950 |" in text
    assert "| dacer2-no-qgrad | 0 | missing | | | |" in text  # unfinished runs stay out of the table
    assert "Hopper-v5__dacer2-no-qgrad__0" not in text  # only finished (committed) runs make the page
    comparison = next(line for line in text.splitlines() if line.startswith("| dacer2 - gaussian |"))
    cells = [c.strip() for c in comparison.strip("|").split("|")]
    assert cells[1] == "847" and cells[3] == "yes, dacer2 higher"  # final return
    assert cells[6] == "yes, dacer2 higher"  # mean over training separates these made-up seeds too
    # Seed by seed: final-return differences 800, 880, 860 -> mean 847, t(2) interval around it excludes 0.
    matched = [line for line in text.splitlines() if line.startswith("| dacer2 - gaussian |")][1]
    cells = [c.strip() for c in matched.strip("|").split("|")]
    assert cells[1] == "0: +800, 1: +880, 2: +860" and cells[2].startswith("847 [") and cells[3] == "yes, dacer2 higher"
    assert (page_builder.FIGURES / "results_hopper-100k.png").stat().st_size > 10_000
    missing = text[text.index("### Rows still missing"):]
    hopper = next(line for line in missing.splitlines() if line.startswith("| Hopper-v5, 100k env steps |"))
    assert "dacer2-no-qgrad: 0 1 2" in hopper and "dacer2: 0" not in hopper
    assert "--out-dir results/hopper-100k" in missing
    # Regenerating from the same files gives the same page.
    page_builder.main()
    assert page_builder.PAGE.read_text() == text


def test_welch_interval_against_a_hand_computed_case(page_builder):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    diff, low, high = page_builder.welch_interval(a, b)
    se = math.sqrt(1.0 / 3 + 4.0 / 3)  # variances 1 and 4, three seeds each
    df = (5.0 / 3) ** 2 / ((1.0 / 3) ** 2 / 2 + (4.0 / 3) ** 2 / 2)  # 2.94, used as it is (not rounded down to 2)
    assert df == pytest.approx(2.941176, abs=1e-6)
    # t_{0.975, 2.941176} = 3.218759 (scipy.stats.t.ppf), between the table's 4.303 (df 2) and 3.182 (df 3)
    assert diff == -2.0 and high - diff == pytest.approx(3.218759 * se, rel=1e-6)
    assert low < 0 < high  # these three seeds do not separate the two


def test_paired_interval_against_a_hand_computed_case(page_builder):
    mean, low, high = page_builder.paired_interval(np.array([21.0, -1210.0, -358.0]))
    sd = np.std([21.0, -1210.0, -358.0], ddof=1)
    assert mean == pytest.approx(-515.667, abs=1e-3)
    assert high - mean == pytest.approx(4.303 * sd / math.sqrt(3), rel=1e-3) and low < 0 < high


def test_mean_over_training_weights_evaluations_by_the_steps_they_cover(page_builder):
    run = page_builder.Run(Path("."), "Hopper-v5", "dacer2", 0, eval_steps=np.array([0, 1000, 3000]),
                           eval_mean=np.array([0.0, 100.0, 100.0]), eval_std=np.zeros(3))
    assert page_builder.mean_over_training(run) == pytest.approx((50 * 1000 + 100 * 2000) / 3000)
    single = dataclasses.replace(run, eval_steps=np.array([5000]), eval_mean=np.array([42.0]), eval_std=np.zeros(1))
    assert page_builder.mean_over_training(single) == 42.0


def test_page_without_markers_is_refused(page_builder):
    page_builder.PAGE.write_text("# no markers\n")
    assert page_builder.main() == 2


def test_one_seed_reports_no_spread_and_no_comparison(page_builder):
    runs = page_builder.RESULTS / "hopper-100k" / "runs"
    finished_run(runs, "gaussian", 0, [10, 50, 431])
    finished_run(runs, "dacer2", 0, [10, 500, 900])
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    assert "| gaussian | 1 | 431 (one seed) | 0: 431 |" in text  # never "+- 0": one seed measures no spread
    assert "+- 0 |" not in text
    assert "Welch" not in text  # no interval from one seed per algorithm


def _coverage_report(det_coverage, det_return, sto_coverage=4, env_steps=30_000):
    def report(coverage):
        counts = [50 if i < coverage else 0 for i in range(4)]
        return {"counts": dict(zip(("right", "left", "up", "down"), counts)), "coverage": coverage}

    return {"env_steps": env_steps, "returns": {"deterministic": {"mean": det_return}},
            "multigoal": {"deterministic": report(det_coverage), "stochastic": report(sto_coverage)}}


def _coverage_run(root, folder, config, report, name="eval.json"):
    run = root / folder
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / name).write_text(json.dumps(report))


def test_cost_table_and_return_per_cost(page_builder):
    runs = page_builder.RESULTS / "hopper-100k" / "runs"
    for seed in range(2):
        finished_run(runs, "dacer2", seed, [10, 500, 800])
        finished_run(runs, "gaussian", seed, [10, 50, 400])
    finished_run(page_builder.RESULTS / "hopper-100k-bf16" / "runs", "dacer2", 0, [10, 500, 900])
    cost_dir = page_builder.RESULTS / "algo-cost"
    cost_dir.mkdir(parents=True)
    common = dict(date="2026-12-03 22:57 UTC", device="cpu", device_name="Some CPU (2 cores)", commit="abc1234",
                  suite="algo_cost", op="training update", mode="Hopper-v5", threads="1")
    with open(cost_dir / "cpu-some.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*common, "backend", "median_ms", "note"])
        writer.writeheader()
        writer.writerow(dict(common, backend="dacer2", median_ms="50.0", note="T=5 eta=0.01 backend=fused rounds=30"))
        writer.writerow(dict(common, backend="gaussian", median_ms="25.0", note="gaussian head rounds=30"))
        writer.writerow(dict(common, backend="dacer", median_ms="80.0", note="T=20 eta=0 rounds=30"))
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    assert "One benchmark run on **Some CPU (2 cores)**" in text
    assert "| Hopper-v5 | dacer | T=20 eta=0 | 80.0 | 1.60 |" in text
    # final return 800 / cost 1 and 400 / cost 0.5; no dacer runs, so no dacer row in the return table
    assert "| Hopper-v5 | dacer2 | 1.00 | 800 | 800 |" in text
    assert "| Hopper-v5 | gaussian | 0.50 | 400 | 800 |" in text
    assert "| Hopper-v5 | dacer | 1.60 |" not in text
    # bf16 runs are shown in their own section, but the fp32 benchmark's cost is not theirs
    assert "| dacer2 (bf16) | 1 | " in text and "| Hopper-v5 | dacer2 (bf16) |" not in text


def test_multigoal_rows_in_order_with_the_dacer_comparison(page_builder):
    for algo, coverages in (("gaussian", (1, 1)), ("dacer", (2, 3, 2)), ("dacer2", (4, 4, 3))):
        for seed, coverage in enumerate(coverages):
            _coverage_run(page_builder.MULTIGOAL_RUNS, f"{algo}__{seed}", {"algo": algo, "seed": seed},
                          _coverage_report(coverage, -200.0 - seed, env_steps=60_000))
    assert page_builder.main() == 0
    text = page_builder.EVALUATION_PAGE.read_text()
    table = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "60k" in line]
    assert table == ["dacer2"] * 3 + ["dacer"] * 3 + ["gaussian"] * 2
    assert "**dacer**: all four goals deterministically on 0 of 3 seeds; deterministic coverage 2-3 goals (mean 2.3)" in text
    line = next(line for line in text.splitlines() if line.startswith("| dacer2 - dacer |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "+1.3" and cells[3] == "yes, dacer2 higher"  # 4,4,3 against 2,3,2 goals
    assert cells[4] == "+0.0" and cells[6] == "no"  # the same returns seed for seed


def test_few_steps_table_takes_t5_from_the_coverage_runs_30k_reports(page_builder):
    few = page_builder.RESULTS / "few-steps" / "runs"
    for algo, coverage in (("dacer2", 3), ("dacer2-no-qgrad", 1)):
        for steps in (1, 2):
            for seed in range(3):
                _coverage_run(few, f"{algo}__T{steps}__{seed}", {"algo": algo, "seed": seed, "diffusion_steps": steps},
                              _coverage_report(coverage, -250.0 - 10 * seed))
        for seed in range(4):  # seed 3 of the coverage table is not part of the few-step comparison
            _coverage_run(page_builder.MULTIGOAL_RUNS, f"{algo}__{seed}", {"algo": algo, "seed": seed, "diffusion_steps": 5},
                          _coverage_report(4, -230.0), name="eval_30k.json")
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    assert "| 1 | with L_g (dacer2) | 3 | 0: 3/4, 1: 3/4, 2: 3/4 | 3.0 | 4.0 | -260 +- 10 |" in text
    assert "| 2 | without L_g (dacer2-no-qgrad) | 3 | 0: 1/4, 1: 1/4, 2: 1/4 | 1.0 | 4.0 | -260 +- 10 |" in text
    assert "| 5 | with L_g (dacer2) | 3 | 0: 4/4, 1: 4/4, 2: 4/4 | 4.0 | 4.0 | -230 +- 0 |" in text
    assert (page_builder.FIGURES / "results_few_steps.png").stat().st_size > 10_000


def test_bf16_parity_table_pairs_the_quick_start_seeds(page_builder):
    def quickstart(folder, seed, precision, history):
        run = page_builder.RESULTS / folder / "runs" / f"InvertedPendulum-v5__dacer2__{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"seed": seed, "precision": precision}))
        (run / "result.json").write_text(json.dumps({"final_eval_mean": history[-1][1], "eval_history": history}))

    quickstart("quickstart", 0, "fp32", [[0, 4.0, 1.0], [6000, 990.0, 0.0], [14000, 1000.0, 0.0]])
    quickstart("quickstart", 1, "fp32", [[0, 5.0, 1.0], [14000, 1000.0, 0.0]])
    quickstart("quickstart-bf16", 0, "bf16", [[0, 4.0, 1.0], [8000, 960.0, 0.0], [14000, 700.0, 0.0]])
    text = regenerated(page_builder, page_builder.PERFORMANCE_PAGE, page_builder.PARITY_BEGIN, page_builder.PARITY_END)
    assert "| 0 | 1000 | 700 | 6,000 | 8,000 |" in text
    assert "| 1 | 1000 | not run | 14,000 | - |" in text
    assert "bf16 runs recorded precision: bf16." in text
    assert "Missing bf16 seeds 1 2 3 4:" in text


def test_provenance_table_names_what_each_result_json_recorded(page_builder):
    runs = page_builder.RESULTS / "hopper-100k" / "runs"
    for seed, extra in enumerate([{}, {"host": "CPU X (family 1 model 2)", "code": "dacer2 0.1.0, git abc1234"},
                                  {"host": "CPU X (family 1 model 2)", "code": "dacer2 0.1.0, git abc1234"}]):
        run = finished_run(runs, "dacer2", seed, [10, 20, 30])
        (run / "result.json").write_text(json.dumps({"env_steps": 30_000, "wall_time": 600.0 * (seed + 1), **extra}))
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Hopper-v5, 100k env steps | dacer2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # seed order; a host or code that a run did not record is said so, and where seeds differ each value names its
    # seeds, once
    assert cells[2:] == ["10, 20, 30", "seed 0: not recorded; seeds 1, 2: CPU X (family 1 model 2)",
                         "seed 0: not recorded; seeds 1, 2: dacer2 0.1.0, git abc1234"]


def test_papers_protocol_section_counts_iterations_and_shows_the_1_env_rows(page_builder):
    papers = page_builder.RESULTS / "walker2d-papers-100k" / "runs"
    one_env = page_builder.RESULTS / "walker2d-100k" / "runs"
    for seed, high in enumerate((3000, 3400, 3200)):
        for algo, top in (("dacer2", high), ("gaussian", high - 1000)):
            run = fake_run(papers, f"Walker2d-v5__{algo}__{seed}", "Walker2d-v5", algo, seed, [10, 900, top],
                           step=50_000)
            config = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps({**config, "num_envs": 20, "protocol": "papers"}))
            (run / "result.json").write_text("{}")
        for algo in ("dacer2", "dacer2-no-qgrad"):  # 1-env runs longer than the papers' runs: cut to match
            run = fake_run(one_env, f"Walker2d-v5__{algo}__{seed}", "Walker2d-v5", algo, seed,
                           [10, 300, 500 + seed, 900, 950, 990], step=2_500)
            (run / "result.json").write_text("{}")
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    section = text[text.index("#### Walker2d-v5, the papers' protocol, 100k iterations of 20 envs (2M env steps)"):]
    section = section[:section.index("\n#### ", 10)]
    # Indexed by iteration, env steps beside: 150,000 env steps of 20 envs are 7,500 iterations.
    assert "| dacer2 | 7,500 (150,000) | 3 | 3200 +- 200 |" in section
    # The 1-env rows at the same 7,500 iterations (the same number of updates), their later evaluations left out.
    assert "| dacer2 (1 env) | 7,500 (7,500) | 3 | 501 +- 1 |" in section and "990" not in section
    assert "| dacer | 100,000 (2,000,000) | 0 | missing |" in section
    compared = {line.split("|")[1].strip() for line in section.splitlines()
                if line.startswith("|") and " - " in line.split("|")[1]}
    # Within the protocol, and each algorithm against its own 1-env rows; never 1-env rows against each other.
    assert compared == {"dacer2 - gaussian", "dacer2 - dacer2 (1 env)"}
    assert (page_builder.FIGURES / "results_walker2d-papers-100k.png").stat().st_size > 10_000
    assert "1.5M iterations" in section and "num_vec_envs=20" in section


def test_papers_runs_of_two_lengths_get_a_table_each_and_are_listed_as_to_be_extended(page_builder):
    """Runs landed at half the budget and extended later: the first table cuts every run at the shortest length,
    the second holds only the runs that reached the longer one; no mean mixes budgets."""
    papers = page_builder.RESULTS / "halfcheetah-papers-100k" / "runs"
    curves = {0: [10, 900, 1000, 2000, 3000, 4000], 1: [10, 800, 1200], 2: [10, 700, 1400]}
    for seed, returns in curves.items():
        run = fake_run(papers, f"HalfCheetah-v5__dacer2__{seed}", "HalfCheetah-v5", "dacer2", seed, returns,
                       step=50_000)
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "num_envs": 20, "protocol": "papers"}))
        (run / "result.json").write_text("{}")
    assert page_builder.main() == 0
    text = page_builder.PAGE.read_text()
    section = text[text.index("#### HalfCheetah-v5, the papers' protocol"):]
    section = section[:section.index("\n#### ", 10)]
    short = section.index("**At 7,500 iterations**, every run cut there")
    long = section.index("**At 15,000 iterations**")
    assert short < long
    # Seed 0 cut at 7,500 iterations: its final return is its 1000 there, not the 4000 it reached later.
    assert "| dacer2 | 7,500 (150,000) | 3 | 1200 +- 200 | 0: 1000, 1: 1200, 2: 1400 |" in section[short:long]
    assert "| dacer2 | 15,000 (300,000) | 1 | 4000 (one seed) | 0: 4000 |" in section[long:]
    missing = text[text.index("### Rows still missing"):]
    row = next(line for line in missing.splitlines() if line.startswith("| HalfCheetah-v5, the papers'"))
    assert "dacer2 seed 0: at 15,000 of 100,000 iterations, to be extended" in row
    assert "dacer2 seed 2: at 7,500 of 100,000 iterations, to be extended" in row
    assert "--resume results/halfcheetah-papers-100k/runs/HalfCheetah-v5__ALGO__SEED --total-steps 2000000" in row
    assert "elsewhere, rerun it with the first command" in row  # checkpoints are not committed
    provenance = text[text.index("### Where the runs ran"):]
    row = next(line for line in provenance.splitlines() if line.startswith("| HalfCheetah-v5, the papers'"))
    assert "(seed 0 to 15,000 iterations, seed 1 to 7,500 iterations, seed 2 to 7,500 iterations so far)" in row
