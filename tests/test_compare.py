"""Comparing rows (lea_tiny.compare): paired differences with intervals, and Table 3 as it prints."""

import numpy as np
import pytest
from scipy import stats

from lea_tiny.compare import AblationTable, CrossValidation, load_results, paired_difference


def _result(variant, point, aurocs, f1s=None, repeats=1, n_train=20, n_test=10, **extra):
    f1s = f1s or [auroc - 0.25 for auroc in aurocs]
    folds = len(aurocs) // repeats
    return CrossValidation(variant, "resnet18", point, 11_200_000,
                           [dict(repeat=i // folds, fold=i % folds, f1=f1, auroc=auroc, n_train=n_train, n_test=n_test,
                                 **{name: values[i] for name, values in extra.items()})
                            for i, (f1, auroc) in enumerate(zip(f1s, aurocs))])


# Paired differences ---------------------------------------------------------------------------------------
def test_the_uncorrected_interval_is_scipys_paired_t_interval():
    row, reference = [0.81, 0.74, 0.90, 0.66, 0.85, 0.79], [0.70, 0.71, 0.83, 0.69, 0.72, 0.75]
    difference = paired_difference(_result("direct_attention", 1, row, repeats=2), _result("baseline", None, reference,
                                   repeats=2), corrected=False)
    expected = stats.ttest_rel(row, reference).confidence_interval(0.95)
    assert difference.mean == pytest.approx(np.mean(np.subtract(row, reference)))
    assert (difference.low, difference.high) == pytest.approx((expected.low, expected.high))
    assert difference.pairs == 6


def test_the_corrected_interval_widens_by_nadeau_and_bengios_factor():
    # Differences 0.1, 0.2, 0.3: mean 0.2, sample variance 0.01; n_test / n_train = 0.5, so
    # the half width is t(0.975, 2) * sqrt((1/3 + 1/2) * 0.01) = 4.3027 * 0.091287 = 0.39278.
    difference = paired_difference(_result("caan_resnet", 2, [0.8, 0.9, 1.0]), _result("baseline", None, [0.7] * 3))
    assert difference.mean == pytest.approx(0.2)
    assert difference.high - difference.mean == pytest.approx(0.39278, abs=1e-5)
    assert difference.verdict == "cannot be told apart"
    assert str(difference) == "+0.200 [-0.193, +0.593]"


def test_a_difference_of_the_same_size_on_every_fold_is_settled():
    better = paired_difference(_result("caan_resnet", 2, [0.8, 0.9, 0.7]), _result("baseline", None, [0.7, 0.8, 0.6]))
    assert better.low == pytest.approx(0.1) and better.high == pytest.approx(0.1) and better.verdict == "better"
    worse = paired_difference(_result("baseline", None, [0.7, 0.8, 0.6]), _result("caan_resnet", 2, [0.8, 0.9, 0.7]))
    assert worse.verdict == "worse"


def test_the_interval_covers_the_true_difference_about_95_times_in_100():
    # Independent folds (n_test / n_train -> 0 and corrected=False is the textbook interval): simulate
    # paired differences with a known mean and count how often the interval covers it.
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        reference = rng.normal(0.7, 0.05, 6)
        row = reference + rng.normal(0.03, 0.04, 6)
        difference = paired_difference(_result("direct_attention", 1, list(row)),
                                       _result("baseline", None, list(reference)), corrected=False)
        covered += difference.low <= 0.03 <= difference.high
    assert 0.93 < covered / 2000 < 0.97


def test_rows_of_other_folds_cannot_be_paired():
    with pytest.raises(ValueError, match="not measured on the same folds"):
        paired_difference(_result("direct_attention", 1, [0.8, 0.9, 0.7]), _result("baseline", None, [0.7, 0.8]))
    with pytest.raises(ValueError, match="metric"):
        paired_difference(_result("baseline", None, [0.7, 0.8]), _result("baseline", None, [0.7, 0.8]), metric="acc")
    with pytest.raises(ValueError, match="at least two"):
        paired_difference(_result("baseline", None, [0.7]), _result("baseline", None, [0.8]))


# Table 3 ---------------------------------------------------------------------------------------------------
def test_the_table_keeps_the_best_point_by_mean_f1_and_prints_every_difference_to_the_baseline():
    aurocs = [0.8, 0.9, 0.7]
    table = AblationTable([_result("map_alone", None, [0.9, 0.95, 0.85]), _result("baseline", None, [0.7, 0.8, 0.6]),
                           _result("caan_mobilenet", 1, aurocs, f1s=[0.5, 0.7, 0.6],
                                   caan_f1=[0.6] * 3, caan_auroc=[0.9, 0.9, 0.9]),
                           _result("caan_mobilenet", 2, aurocs, f1s=[0.9, 0.9, 0.9],
                                   caan_f1=[0.6] * 3, caan_auroc=[0.95, 0.95, 0.95]),
                           _result("caan_mobilenet", 3, aurocs, f1s=[0.9, 0.9, 0.9],  # a tie: the earlier stays
                                   caan_f1=[0.6] * 3, caan_auroc=[0.9, 0.9, 0.9]),
                           _result("caan_mobilenet", None, aurocs, attention_point=[1, 2, 2])],
                          config={}, environment={})
    assert [(row.variant, row.attention_point) for row in table.rows] == \
        [("map_alone", None), ("baseline", None), ("caan_mobilenet", 2)]
    lines = str(table).splitlines()
    assert lines[0] == "| model | attention point | params | F1 | AUROC | AUROC - baseline [95 % CI] | reading |"
    assert lines[3] == "| ResNet18 |  | 11.2M | 0.450 ± 0.082 | 0.700 ± 0.082 | (reference) |  |"
    assert lines[4] == ("| ResNet18 + MobileNet-small CAAN | best of 1,2,3 on the test folds: 2 | 11.2M | "
                        "0.900 ± 0.000 | 0.800 ± 0.082 | +0.100 [+0.100, +0.100] | better |")
    assert lines[5].startswith("| ResNet18 + MobileNet-small CAAN | chosen on validation: 1 x1, 2 x2 |")
    assert lines[6].startswith("| ResNet18 + MobileNet-small CAAN: its CAAN's own head (reads the map only) | 2 |")
    assert "0.950 ± 0.000 | +0.250 [-0.143, +0.643] | cannot be told apart |" in lines[6]  # as in the 0.1, 0.2, 0.3 case
    assert len(table.differences()) == len(table.lines()) - 1
    assert "beat the baseline" in table.reading() and "0.700" in table.reading()


def test_load_results_reports_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved results"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a results.json written by lea_tiny"):
        load_results(tmp_path / "results.json")
