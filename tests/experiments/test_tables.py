"""Result tables and linear fits of the comparison grid, on hand-computed numbers."""

import csv
import io
import math

import pytest

from halluc_cl.experiments.paired import paired_rows
from halluc_cl.experiments.power import facts_needed, seeds_needed
from halluc_cl.experiments.tables import (
    CSV_COLUMNS,
    CellResult,
    confidence_interval,
    least_squares,
    mean_std,
    results_csv,
    results_markdown,
    selection,
    table_rows,
)


def cell(method, x, seed, acc, kn=1.0, unk=0.5, halluc=0.1, decline=0.2, wall=3.0, passes=300,
         val_acc=0.7, forgotten=None):
    """A cell whose held-out test accuracy is 1.0 at the snapshot and ``acc`` in its one
    evaluation after it (lasting loss 1 − acc); ``forgotten``: fact id -> forgotten."""
    final = {"heldout_test_acc": acc, "heldout_val_acc": val_acc, "known_train_acc": kn,
             "new_fact_acc": unk, "hallucination_rate": halluc, "abstain_rate": 0.0,
             "val_hallucination_rate": 0.4, "val_abstain_rate": 0.0}
    final = {k: v for k, v in final.items() if v is not None}
    warmup = {"epoch": 0, "heldout_test_acc": 1.0, "heldout_val_acc": 0.9}
    snapshot = {"window": 3}
    if forgotten is not None:
        snapshot["heldout_test"] = {
            "kept_ids": [i for i, f in forgotten.items() if not f],
            "forgotten_ids": [i for i, f in forgotten.items() if f]}
    summary = {"final": final,
               "peak": {"heldout_test_acc": 1.0, "heldout_val_acc": 0.9},
               "heldout_test_decline": decline, "heldout_val_decline": 0.5,
               "cost": {"train_token_passes": passes},
               "protocol": {"split_seed": seed, "heldout_disjoint": "subject"},
               "wall_time_s": wall, "warmup_end": warmup, "snapshot": snapshot,
               "history": [warmup, {"epoch": 1, **final}]}
    return CellResult(method, x, seed, f"runs/{method}/unk{x}_seed{seed}", summary)


@pytest.mark.parametrize(("values", "digits", "expected"), [
    ([0.1, 0.3], 3, "0.200 ± 0.141"),  # sample std: sqrt((0.1² + 0.1²) / 1)
    ([10.0, 12.0], 1, "11.0 ± 1.4"),
    ([0.5], 3, "0.500"),
    ([0.5, None], 3, "0.500"),
    ([], 3, "–"),
    ([None], 3, "–"),
])
def test_mean_std(values, digits, expected):
    assert mean_std(values, digits) == expected


def test_perfect_line_gives_its_slope_and_r2_one():
    xs = [0.0, 0.25, 0.5, 0.75]
    fit = least_squares([[x] for x in xs], [0.9 - 0.4 * x for x in xs])
    assert fit.coef == pytest.approx((0.9, -0.4)) and fit.r2 == pytest.approx(1.0)
    assert fit.n == 4


def test_noisy_line_matches_hand_computation():
    # x = 0, 1, 2; y = 0, 2, 1: slope Sxy/Sxx = 1/2, intercept 1 − 0.5 = 0.5;
    # residuals −0.5, 1, −0.5 → SS_res 1.5; SS_tot 2 → R² = 0.25
    fit = least_squares([[0.0], [1.0], [2.0]], [0.0, 2.0, 1.0])
    assert fit.coef == pytest.approx((0.5, 0.5)) and fit.r2 == pytest.approx(0.25)


def test_constant_target_and_single_x():
    assert math.isnan(least_squares([[0.0], [1.0]], [0.7, 0.7]).r2)
    assert least_squares([[0.5], [0.5]], [0.1, 0.3]) is None  # slope not identifiable


def test_results_csv_has_one_row_per_cell_and_empty_missing_fields():
    text = results_csv([cell("sft", 0.5, 0, 0.8), cell("sft", 0.0, 1, 0.9, unk=None)])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    assert rows[0]["heldout_acc"] == "0.8" and rows[0]["heldout_peak"] == "1.0"
    assert rows[0]["split"] == "test" and rows[0]["split_seed"] == "0"
    val = list(csv.DictReader(io.StringIO(results_csv([cell("sft", 0.5, 0, 0.8)], "val"))))
    assert val[0]["heldout_acc"] == "0.7" and val[0]["heldout_peak"] == "0.9"
    assert val[0]["heldout_decline"] == "0.5" and val[0]["hallucination_rate"] == "0.4"
    assert rows[1]["new_fact_acc"] == "" and rows[1]["seed"] == "1"
    assert rows[0]["run_dir"] == "runs/sft/unk0.5_seed0"


def test_markdown_mean_std_in_method_order_without_fit_for_one_fraction():
    results = [cell("sft", 0.5, 0, 0.8, halluc=0.1), cell("sft", 0.5, 1, 0.6, halluc=0.3),
               cell("distill", 0.5, 0, 0.9, unk=None, passes=450)]
    md = results_markdown(results, ["distill", "sft"])
    lines = md.splitlines()
    distill = next(i for i, line in enumerate(lines) if line.startswith("| distill |"))
    sft = next(i for i, line in enumerate(lines) if line.startswith("| sft |"))
    assert distill < sft
    # lasting loss from the snapshot (1 − acc), its t-interval (t(0.975, 1) = 12.706, half
    # 12.706 · 0.1414 / √2 = 1.271), forgotten (no per-fact outcomes: –), hallucination,
    # new-fact acc, final acc, abstain, peak decline, cost, wall time
    assert lines[sft] == ("| sft | 0.5 | 0,1 | 0.300 ± 0.141 | [-0.971, 1.571] | – | "
                          "0.200 ± 0.141 | 0.500 ± 0.000 | 0.700 ± 0.141 | 0.000 ± 0.000 | "
                          "0.200 ± 0.000 | 1.00 ± 0.00 | 3.0 ± 0.0 |")
    assert lines[distill] == ("| distill | 0.5 | 0 | 0.100 | – | – | 0.100 | – | 0.900 | 0.000 | "
                              "0.200 | 1.50 | 3.0 |")
    assert "heldout_test (report)" in md and "subject" in md
    assert "Gekhman" not in md


def test_markdown_fit_section_with_three_fractions():
    xs = [0.0, 0.5, 1.0]
    results = [cell("sft", x, 0, 0.9 - 0.4 * x) for x in xs] + [cell("ko", 0.0, 0, 0.95)]
    md = results_markdown(results, ["sft", "ko"])
    assert "## Gekhman et al. linear fits" in md
    assert "| sft | 0.900 | -0.400 | 1.000 | 3 |" in md
    assert "| ko | – | – | – | – |" in md  # one fraction: no slope
    assert "| ko | – | – | – | – | – | – |" in md  # its regression: one fraction, none


def test_confidence_interval_is_the_t_interval_of_the_mean():
    # mean 0.2, sample std 0.1, n = 3: half-width t(0.975, 2) · 0.1 / sqrt(3) = 4.303 · 0.0577
    assert confidence_interval([0.1, 0.2, 0.3]) == "[-0.048, 0.448]"
    # n = 5, values 1..5: mean 3, std sqrt(2.5), t(0.975, 4) = 2.776 -> 3 ± 1.963
    assert confidence_interval([1, 2, 3, 4, 5], 2) == "[1.04, 4.96]"
    assert confidence_interval([0.5]) == "–" and confidence_interval([0.5, None]) == "–"
    # n = 32, values ±1 alternating: mean 0, std sqrt(32/31), t(0.975, 31) = 2.0395 (not 1.96)
    values = [1.0, -1.0] * 16
    assert confidence_interval(values) == f"[{-2.0395 * math.sqrt(32 / 31) / math.sqrt(32):.3f}, " \
        f"{2.0395 * math.sqrt(32 / 31) / math.sqrt(32):.3f}]"


def test_paired_rows_pool_discordant_facts_over_seeds():
    # seed 0: a forgets f1, f2; sft forgets f2, f3 -> only a: 1, only sft: 1
    # seed 1: a forgets f1;     sft forgets f2, f3 -> only a: 1, only sft: 2
    # f9 is right at the snapshot of sft only: not paired
    a0 = {"f1": True, "f2": True, "f3": False}
    s0 = {"f1": False, "f2": True, "f3": True, "f9": True}
    a1 = {"f1": True, "f2": False, "f3": False}
    s1 = {"f1": False, "f2": True, "f3": True}
    results = [cell("a", 0.5, 0, 0.7, forgotten=a0), cell("sft", 0.5, 0, 0.6, forgotten=s0),
               cell("a", 0.5, 1, 0.8, forgotten=a1), cell("sft", 0.5, 1, 0.5, forgotten=s1)]
    (row,) = paired_rows(results, ["sft", "a"], ["sft", "known_only"])
    assert (row["method"], row["reference"], row["seeds"]) == ("a", "sft", 2)
    assert (row["only_method"], row["only_reference"]) == (2, 3)
    assert row["mcnemar_p"] == pytest.approx(1.0)  # 2 of 5 discordant: two-sided p = 1
    assert row["shared"] == 6  # f1-f3 in both seeds
    # differences -0.1, -0.3: d = mean / sd = -0.2 / 0.1414 -> power is in the paired section
    assert row["seeds_for_power"] == seeds_needed(-0.2, math.sqrt(0.02))
    assert row["facts_for_power"] == facts_needed(2, 3, 6)
    # lasting losses a: 0.3, 0.2; sft: 0.4, 0.5 -> differences -0.1, -0.3
    d = row["difference"]
    assert d.mean == pytest.approx(-0.2) and d.n == 2
    half = 12.7062 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1) · sd / √n
    assert (d.low, d.high) == pytest.approx((-0.2 - half, -0.2 + half), abs=1e-4)
    md = results_markdown(results, ["sft", "a"])
    assert "## Paired comparisons" in md and "| a | sft | 0.5 | 2 | -0.200 |" in md
    # with the control too: each pair once (the control against SFT, not also the reverse)
    control = [cell("known_only", 0.5, s, 0.95, forgotten={"f1": False}) for s in (0, 1)]
    pairs = [(r["method"], r["reference"])
             for r in paired_rows(results + control, ["sft", "known_only", "a"],
                                  ["sft", "known_only"])]
    assert pairs == [("known_only", "sft"), ("a", "sft"), ("a", "known_only")]


def test_selection_takes_the_lowest_lasting_loss_among_those_that_learn():
    # sft learns 1.0; distill_x learns too little (0.8 < 0.9), distill_y and distill_z learn
    results = [cell("sft", 0.5, 0, 0.5, unk=1.0),
               cell("distill_x", 0.5, 0, 0.99, unk=0.8, decline=0.0),
               cell("distill_y", 0.5, 0, 0.9, unk=0.95, decline=0.3),
               cell("distill_z", 0.5, 0, 0.8, unk=0.92, decline=0.1)]
    rows = table_rows(results, "test")
    (chosen,) = selection(rows, ["sft", "distill_x", "distill_y", "distill_z"])
    assert chosen["family"] == "distill" and (chosen["settings"], chosen["eligible"]) == (3, 2)
    assert chosen["chosen"] == "distill_y" and chosen["lasting_loss"] == pytest.approx(0.1)
    assert chosen["by_peak_decline"] == "distill_z"  # the earlier rule chose otherwise


def test_lasting_loss_prefers_the_summarys_own_value():
    from halluc_cl.experiments.paired import lasting_loss

    c = cell("sft", 0.5, 0, 0.8)
    assert lasting_loss(c.summary) == pytest.approx(0.2)  # from the history: 1.0 − 0.8
    c.summary["snapshot"]["heldout_test"] = {"lasting_loss": 0.19}  # from fact counts
    assert lasting_loss(c.summary) == 0.19
