"""Chapter 15's experiments: the map treatments, rows on the same folds, saved as they go and resumed."""

import pytest
import torch

import lea_tiny.beyond as beyond_module
from lea_tiny.beyond import (BASELINE, IDEAS, LEA_NET, MAP_TREATMENTS, WHERE, WHERE_POINTS, Row, flat, normalised,
                             run_rows, table, where_table)
from lea_tiny.maps import image_score
from lea_tiny.protocol import TEACHING

TINY = TEACHING.replace(folds=2, epochs=1, colorizer_epochs=1)


def _maps(seed=0):
    maps = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.3
    maps[1, :, 10:14, 10:14] = 0.9  # one image with a hot lesion
    return maps


def test_a_flat_map_keeps_each_images_score_and_nothing_of_where():
    maps = _maps()
    flattened = flat(maps)
    assert flattened.shape == maps.shape
    for one, score in zip(flattened, image_score(maps)):
        assert torch.all(one == score)
    assert image_score(flattened)[1] > image_score(flattened)[0]  # how much: the lesion's image scores higher


def test_a_normalised_map_keeps_where_and_nothing_of_how_much():
    maps = _maps()
    scaled = normalised(maps)
    torch.testing.assert_close(scaled.amax(dim=(1, 2, 3)), torch.ones(4))
    assert scaled.min() >= 0
    assert torch.equal(scaled[1].flatten().argmax(), maps[1].flatten().argmax())  # still points at the lesion


def test_where_holds_every_point_under_every_treatment_and_each_idea_changes_one_thing():
    assert {(row.attention_point, row.map_treatment) for row in WHERE.values()} == {
        (point, treatment) for point in WHERE_POINTS for treatment in MAP_TREATMENTS}
    paper = IDEAS[LEA_NET]
    for name, row in IDEAS.items():
        if name not in (BASELINE, LEA_NET):
            assert row.variant == paper.variant and (row.changes or row.attention_point != paper.attention_point)


@pytest.fixture(scope="module")
def saved_run(dataset, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("beyond")
    rows = {BASELINE: IDEAS[BASELINE], LEA_NET: IDEAS[LEA_NET],
            "flat": Row("caan_mobilenet", 3, map_treatment="flat")}
    return rows, out_dir, run_rows(dataset, rows, TINY, out_dir=out_dir, progress=False)


def test_rows_pair_fold_by_fold_and_the_treatment_reaches_the_network(saved_run):
    rows, _, measured = saved_run
    assert [row.label for row in measured] == list(rows)
    assert all([(fold["repeat"], fold["fold"]) for fold in row.folds] == [(0, 0), (0, 1)] for row in measured)
    assert [fold["auroc"] for fold in measured[1].folds] != [fold["auroc"] for fold in measured[2].folds]
    assert "AUROC - baseline (CNN)" in table(measured)


def test_a_resumed_run_trains_only_what_is_missing_and_ends_with_the_same_table(dataset, saved_run, monkeypatch):
    rows, out_dir, measured = saved_run
    trained = []
    original = beyond_module.cross_validate
    monkeypatch.setattr(beyond_module, "cross_validate",
                        lambda variant, *args, **kwargs: trained.append(variant) or original(variant, *args, **kwargs))
    more = dict(rows, normalised=Row("caan_mobilenet", 3, map_treatment="normalised"))
    with pytest.raises(ValueError, match=r"cannot resume the run in .*: its configuration differs \(rows="):
        run_rows(dataset, more, TINY, out_dir=out_dir, resume=True, progress=False)
    resumed = run_rows(dataset, rows, TINY, out_dir=out_dir, resume=True, progress=False)
    assert trained == [] and table(resumed) == table(measured)


def test_the_where_table_needs_every_point(saved_run):
    with pytest.raises(ValueError, match="needs every row of WHERE; missing point 1, as made map"):
        where_table(saved_run[2])


@pytest.mark.parametrize("rows, message", [
    ({"x": Row("baseline", map_treatment="blurred")}, "row 'x' must be a Row of a known variant and map treatment"),
    ({"x": Row("nope")}, "row 'x' must be a Row"),
    ({"x": Row("caan_mobilenet", 3, dict(gates=True))}, r"unknown protocol setting\(s\) \['gates'\]"),
])
def test_bad_rows_are_refused_before_any_training(dataset, rows, message):
    with pytest.raises(ValueError, match=message):
        run_rows(dataset, rows, TINY, progress=False)
