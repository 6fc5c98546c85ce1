"""PNG plots of the comparison grid, from made-up summaries (no fits)."""

import pytest

from halluc_cl.experiments.plots import mean_curve, nearest_fraction, write_plots
from halluc_cl.experiments.tables import CellResult

PNG = b"\x89PNG\r\n\x1a\n"


def result(method, x, seed, accs):
    history = [{"epoch": e, "heldout_test_acc": a} for e, a in enumerate(accs)]
    final = {"heldout_test_acc": accs[-1], "new_fact_acc": 0.3 + seed / 10,
             "hallucination_rate": 0.1 * (1 + seed), "known_train_acc": 1.0}
    return CellResult(method, x, seed, "", {"final": final, "history": history,
                                            "warmup_epochs": 1})


def test_nearest_fraction_and_mean_curve():
    assert nearest_fraction([0.0, 0.25, 0.75]) == 0.25  # a tie goes to the smaller
    assert nearest_fraction([0.0, 0.6, 1.0]) == 0.6
    epochs, acc = mean_curve([{"history": [{"epoch": 0, "heldout_test_acc": 1.0},
                                           {"epoch": 1, "heldout_test_acc": 0.5}]},
                              {"history": [{"epoch": 0, "heldout_test_acc": 0.8}]}])
    assert epochs == [0, 1] and acc == pytest.approx([0.9, 0.5])


def test_write_plots(tmp_path):
    results = [result(m, x, s, [1.0, 0.9 - x / 2, 0.8 - x / 2])
               for m in ("sft", "distill") for x in (0.25, 0.75) for s in (0, 1)]
    results.append(result("known_only", 0.0, 0, [1.0, 1.0, 0.95]))
    paths = write_plots(results, ["sft", "distill", "known_only"], tmp_path)
    assert {p.name for p in paths} == {"heldout_test_acc.png", "pareto.png",
                                       "unknown_fraction.png"}
    for p in paths:
        assert p.read_bytes().startswith(PNG)
    assert not list(tmp_path.glob(".*.tmp"))
    # one fraction per method: no fraction plot, and a stale one from a wider grid goes away
    one = [r for r in results if r.unknown_fraction in (0.0, 0.25)]
    paths = write_plots(one, ["sft", "distill", "known_only"], tmp_path)
    assert "unknown_fraction.png" not in {p.name for p in paths}
    assert not (tmp_path / "unknown_fraction.png").exists()
