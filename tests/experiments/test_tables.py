"""Result tables and linear fits of the comparison grid, on hand-computed numbers."""

import csv
import io
import math

import pytest

from halluc_cl.experiments.tables import (
    CSV_COLUMNS,
    CellResult,
    confidence_interval,
    gekhman_features,
    gekhman_fit,
    least_squares,
    mean_std,
    results_csv,
    results_markdown,
)


def cell(method, x, seed, acc, kn=1.0, unk=0.5, halluc=0.1, decline=0.2, wall=3.0, passes=300,
         val_acc=0.7):
    final = {"heldout_test_acc": acc, "heldout_val_acc": val_acc, "known_train_acc": kn,
             "new_fact_acc": unk, "hallucination_rate": halluc, "abstain_rate": 0.0,
             "val_hallucination_rate": 0.4, "val_abstain_rate": 0.0}
    summary = {"final": {k: v for k, v in final.items() if v is not None},
               "peak": {"heldout_test_acc": 1.0, "heldout_val_acc": 0.9},
               "heldout_test_decline": decline, "heldout_val_decline": 0.5,
               "cost": {"train_token_passes": passes},
               "protocol": {"split_seed": seed, "heldout_disjoint": "subject"},
               "wall_time_s": wall, "history": []}
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


def test_gekhman_features_and_fit():
    assert gekhman_features({"unknown_fraction": 0.0, "known_train_acc": 0.8,
                             "new_fact_acc": None}) == [0.8, 0.0]
    assert gekhman_features({"unknown_fraction": 1.0, "known_train_acc": None,
                             "new_fact_acc": 0.5}) == [0.0, 0.5]
    assert gekhman_features({"unknown_fraction": 0.25, "known_train_acc": None,
                             "new_fact_acc": 0.5}) is None
    # acc = 0.5 + 0.4·(1−X)·kn − 0.6·X·unk exactly
    specs = [(0.0, 1.0, None), (0.5, 0.8, 0.4), (0.5, 1.0, 0.2), (1.0, None, 0.5)]
    rows = []
    for x, kn, unk in specs:
        acc = 0.5 + 0.4 * (1 - x) * (kn or 0) - 0.6 * x * (unk or 0)
        rows.append({"unknown_fraction": x, "known_train_acc": kn, "new_fact_acc": unk,
                     "heldout_acc": acc})
    fit = gekhman_fit(rows)
    assert fit.coef == pytest.approx((0.5, 0.4, -0.6)) and fit.r2 == pytest.approx(1.0)
    assert fit.n == 4


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
    # decline, its interval, hallucination, new-fact acc, final acc, abstain, cost, wall time
    assert lines[sft] == ("| sft | 0.5 | 0,1 | 0.200 ± 0.000 | [0.200, 0.200] | 0.200 ± 0.141 | "
                          "0.500 ± 0.000 | 0.700 ± 0.141 | 0.000 ± 0.000 | 1.00 ± 0.00 | "
                          "3.0 ± 0.0 |")
    assert lines[distill] == ("| distill | 0.5 | 0 | 0.200 | – | 0.100 | – | 0.900 | 0.000 | "
                              "1.50 | 3.0 |")
    assert "heldout_test (report)" in md and "subject" in md
    assert "Gekhman" not in md


def test_markdown_fit_section_with_three_fractions():
    xs = [0.0, 0.5, 1.0]
    results = [cell("sft", x, 0, 0.9 - 0.4 * x) for x in xs] + [cell("ko", 0.0, 0, 0.95)]
    md = results_markdown(results, ["sft", "ko"])
    assert "## Gekhman et al. linear fit" in md
    assert "| sft | 0.900 | -0.400 | 1.000 | 3 |" in md
    assert "| ko | – | – | – | – |" in md  # one fraction: no slope


def test_confidence_interval_is_the_t_interval_of_the_mean():
    # mean 0.2, sample std 0.1, n = 3: half-width t(0.975, 2) · 0.1 / sqrt(3) = 4.303 · 0.0577
    assert confidence_interval([0.1, 0.2, 0.3]) == "[-0.048, 0.448]"
    # n = 5, values 1..5: mean 3, std sqrt(2.5), t(0.975, 4) = 2.776 -> 3 ± 1.963
    assert confidence_interval([1, 2, 3, 4, 5], 2) == "[1.04, 4.96]"
    assert confidence_interval([0.5]) == "–" and confidence_interval([0.5, None]) == "–"
