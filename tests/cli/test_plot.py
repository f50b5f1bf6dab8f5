"""dacer2-plot on fake run directories: the figure has content, seeds are averaged, tables hold the
papers' final-return metric."""

import csv
import math

import numpy as np
import pytest

from dacer2.cli.plot import plot_main
from dacer2.analysis.plotting import aggregate, legend_beside_axes, plot_learning_curves, t975
from dacer2.analysis.runs import final_return, load_run
from tests.run_dirs import fake_run


def test_final_return_is_best_eval_in_last_ten_percent():
    steps = np.arange(1, 21) * 1000.0  # last 10% = steps >= 18000
    returns = np.arange(20.0)
    returns[10] = 999.0  # a great early evaluation must not count
    returns[17] = 50.0
    assert final_return(steps, returns) == 50.0
    assert final_return(np.array([1000.0]), np.array([3.0])) == 3.0


def test_aggregate_mean_and_band():
    class R:  # the fields aggregate reads
        def __init__(self, steps, mean):
            self.eval_steps, self.eval_mean = np.asarray(steps, float), np.asarray(mean, float)

    curve = aggregate([R([0, 10, 20], [0, 10, 20]), R([0, 10, 20, 30], [2, 12, 22, 32])])
    np.testing.assert_allclose(curve.steps, [0, 10, 20])  # only where both seeds have data
    np.testing.assert_allclose(curve.mean, [1, 11, 21])
    half = t975(1) * np.std([0, 2], ddof=1) / np.sqrt(2)
    np.testing.assert_allclose(curve.high - curve.mean, half)


def test_aggregate_range_band_spans_the_seeds():
    class R:
        def __init__(self, steps, mean):
            self.eval_steps, self.eval_mean = np.asarray(steps, float), np.asarray(mean, float)

    seeds = [R([0, 10], [0, 30]), R([0, 10], [6, 10]), R([0, 10], [3, 20])]
    curve = aggregate(seeds, band="range")
    np.testing.assert_allclose(curve.mean, [3, 20])
    np.testing.assert_allclose(curve.low, [0, 10])
    np.testing.assert_allclose(curve.high, [6, 30])
    ci = aggregate(seeds)  # the default stays the t-interval, which is wider here than the range
    assert (ci.high - ci.low > curve.high - curve.low).all()


def test_plot_cli_writes_nonempty_figure_and_tables(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "a0", "Hopper-v5", "dacer2", 0, [10, 50, 90, 120, 100])
    fake_run(runs, "a1", "Hopper-v5", "dacer2", 1, [20, 60, 100, 140, 130])
    fake_run(runs, "b0", "Hopper-v5", "dacer", 0, [5, 20, 40, 60, 70])
    fake_run(runs, "g0", "dacer2/MultiGoal-v0", "dacer2", 0, [-900, -500, -300], policy_family="gaussian")
    out = tmp_path / "out"
    assert plot_main([str(runs), "--out-dir", str(out), "--formats", "png", "svg", "--title", "test", "--ylim", "-1000", "200", "--band", "range"]) == 0

    import matplotlib.image as mpimg

    image = mpimg.imread(out / "learning_curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].var() > 0  # something was drawn
    assert (out / "learning_curves.svg").stat().st_size > 1000

    summary = list(csv.DictReader(open(out / "learning_curves_summary.csv")))
    by = {(r["env_id"], r["algo"]): r for r in summary}
    assert by[("Hopper-v5", "dacer2")]["seeds"] == "2"
    assert float(by[("Hopper-v5", "dacer2")]["final_return_mean"]) == pytest.approx(115.0)  # last evals (100 + 130) / 2: the window is the last 10% only
    assert float(by[("Hopper-v5", "dacer2")]["final_return_std"]) == pytest.approx(np.std([100, 130], ddof=1))
    assert ("dacer2/MultiGoal-v0", "gaussian") in by  # the comparison run is labelled by its policy family
    assert len(list(csv.DictReader(open(out / "learning_curves_runs.csv")))) == 4
    printed = capsys.readouterr().out
    assert "| Hopper-v5 | dacer2 | 2 | 115.0 +- 21.2 |" in printed
    assert "| Hopper-v5 | dacer | 1 | 70.0 (one seed) |" in printed  # no spread is claimed from one seed
    assert math.isnan(float(by[("Hopper-v5", "dacer")]["final_return_std"]))
    assert (out / "learning_curves.md").read_text().startswith("## Final return per algorithm")


def test_plot_cli_errors_are_one_line(tmp_path, capsys):
    assert plot_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dacer2-plot: error: no run directory at")
    assert plot_main([]) == 2


def test_load_run_reads_eval_rows_only(tmp_path):
    run = load_run(fake_run(tmp_path, "r", "Hopper-v5", "dacer", 3, [1, 2, 3]))
    np.testing.assert_array_equal(run.eval_steps, [1000, 2000, 3000])
    assert run.seed == 3 and run.last_return == 3


@pytest.mark.parametrize("band", ["ci95", "range"])
def test_one_seed_draws_no_band_and_claims_none(tmp_path, band):
    """One seed's curve is that seed's evaluations: no shaded band, and the legend names no interval."""
    one = [load_run(fake_run(tmp_path, "s0", "Hopper-v5", "dacer2", 0, [10, 50, 90]))]
    fig = plot_learning_curves(one, [tmp_path / "one.png"], band=band)
    (ax,) = fig.axes
    assert len(ax.collections) == 0  # fill_between draws a collection: none here
    legend = ax.get_legend().get_title().get_text()
    assert "95%" not in legend and "band:" not in legend and "no band" in legend
    assert "95%" not in fig.get_suptitle() and "95%" not in ax.get_title()
    assert (tmp_path / "one.png").stat().st_size > 1000


def test_two_seeds_keep_the_band_and_say_which(tmp_path):
    two = [load_run(fake_run(tmp_path, f"s{i}", "Hopper-v5", "dacer2", i, [10 + i, 50 + 3 * i, 90])) for i in (0, 1)]
    one = [load_run(fake_run(tmp_path, "b0", "Hopper-v5", "dacer", 0, [5, 20, 40]))]
    (ax,) = plot_learning_curves(two, [tmp_path / "two.png"]).axes
    assert len(ax.collections) == 1
    assert ax.get_legend().get_title().get_text() == "mean over seeds; band: 95% t-interval of the mean"
    (ax,) = plot_learning_curves(two + one, [tmp_path / "mixed.png"]).axes  # the one-seed curve gets no band
    assert len(ax.collections) == 1
    assert ax.get_legend().get_title().get_text().endswith("95% t-interval of the mean; n=1: no band")


def test_a_seed_run_past_the_others_is_drawn_on_as_a_dashed_line(tmp_path):
    """The mean stops where the shortest seed stops; the longer seed's later evaluations stay visible."""
    short = load_run(fake_run(tmp_path, "s0", "Hopper-v5", "dacer2", 0, [10, 50, 90]))
    long = load_run(fake_run(tmp_path, "s1", "Hopper-v5", "dacer2", 1, [20, 60, 100, 400, 800]))
    (ax,) = plot_learning_curves([short, long], [tmp_path / "tails.png"]).axes
    mean, tail = ax.lines
    assert list(mean.get_xdata()) == [1000, 2000, 3000] and list(mean.get_ydata()) == [15, 55, 95]
    assert list(tail.get_xdata()) == [3000, 4000, 5000] and list(tail.get_ydata()) == [100, 400, 800]
    assert tail.get_linestyle() == "--" and tail.get_color() == mean.get_color()
    assert "dashed: a seed run past the others" in ax.get_legend().get_title().get_text()
    assert legend_beside_axes({"dacer2": [short, long]}) and not legend_beside_axes({"dacer2": [short, short]})
    (ax,) = plot_learning_curves([short], [tmp_path / "none.png"]).axes  # seeds of one length: no tails, no note
    assert len(ax.lines) == 1 and "dashed" not in ax.get_legend().get_title().get_text()


@pytest.mark.parametrize("num_algos, outside", [(4, False), (6, True)])
def test_a_legend_of_many_curves_sits_beside_the_axes(tmp_path, num_algos, outside):
    """Six curves' legend inside the axes hides most of them: past four it moves out to the right."""
    runs = [load_run(fake_run(tmp_path, f"a{i}", "Hopper-v5", f"algo{i}", 0, [10 * i, 50, 90])) for i in range(num_algos)]
    fig = plot_learning_curves(runs, [tmp_path / "many.png"])
    (ax,) = fig.axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the returned figure is closed: measure it on a fresh canvas
    legend_box = ax.get_legend().get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    assert (legend_box.x0 >= axes_box.x1) == outside
    assert legend_box.x1 <= fig.bbox.x1  # the saved figure still holds the whole legend


def test_curves_of_multi_env_runs_can_be_drawn_against_iterations(tmp_path):
    from dacer2.analysis.plotting import plot_learning_curves
    from dacer2.analysis.runs import load_run

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text('{"env_id": "Hopper-v5", "algo": "dacer2", "seed": 0, "num_envs": 20}')
    (run / "metrics.csv").write_text("env_steps,eval_return_mean\n0,1\n20000,2\n40000,3\n")
    loaded = load_run(run)
    assert list(loaded.eval_iterations) == [0, 1000, 2000]
    fig = plot_learning_curves([loaded], [tmp_path / "it.png"], x="iterations")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("iterations") and list(ax.lines[0].get_xdata()) == [0, 1000, 2000]
    fig = plot_learning_curves([loaded], [tmp_path / "steps.png"])
    assert fig.axes[0].get_xlabel() == "environment steps" and fig.axes[0].lines[0].get_xdata()[-1] == 40000


def test_t975_at_a_fractional_df_is_the_exact_quantile():
    # Integer df keep the table's values; a Welch-Satterthwaite df between them gets the exact quantile
    # (references: scipy.stats.t.ppf(0.975, df)), not the next integer's.
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(2.0) == 4.303 and t975(30) == 2.042 and t975(31) == 1.96
    for df, expected in ((1.5, 6.016663104427929), (2.5, 3.5746548420036817), (3.7, 2.8675207071911895),
                         (45.5, 2.0134926829292743)):
        assert t975(df) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError):
        t975(-0.5)
