"""Cross-validation and the ablation (lea_tiny.ablation): repeated folds, the map alone, a fair point, Table 3."""

from dataclasses import replace
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from conftest import SIZE
import lea_tiny.ablation as ablation_module
from lea_tiny.ablation import choose_point, cross_validate, map_alone, prepare_folds, run_ablation
from lea_tiny.attention import make_model
from lea_tiny.maps import image_score, map_scale, scale_maps
from lea_tiny.compare import load_results
from lea_tiny.data import AnomalyDataset
from lea_tiny.protocol import MAP_SOURCES

def _fake_maps(monkeypatch, calls=None):
    """Colourisers replaced by random maps (and a record of how they were asked for), for fast fold tests."""
    def fake_fold_anomaly_maps(images, labels, train_index, *, epochs, cross_fit_parts, seed, device):
        if calls is not None:
            calls.append((train_index.tolist(), epochs, cross_fit_parts, seed))
        maps = torch.rand(len(images), SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        maps[~torch.isin(torch.arange(len(images)), train_index)] = 1000.0  # test maps must not move the scale
        return maps

    monkeypatch.setitem(MAP_SOURCES, "colorization", replace(MAP_SOURCES["colorization"], fold_maps=fake_fold_anomaly_maps))


# Folds -------------------------------------------------------------------------------------------------
def test_prepare_folds_gives_stratified_disjoint_folds_with_training_scaled_maps(dataset, folds):
    labels = dataset.labels.numpy()
    assert len(folds) == 2
    tested = np.concatenate([fold.test_index for fold in folds])
    assert sorted(tested.tolist()) == list(range(len(labels)))
    for fold in folds:
        assert set(fold.train_index.tolist()).isdisjoint(fold.test_index.tolist())
        assert labels[fold.test_index].sum() == labels.sum() / 2  # stratified: 4 of the 8 anomalies each
        assert fold.anomaly_maps.shape == (len(labels), SIZE, SIZE)
        assert fold.scale == map_scale(fold.anomaly_maps[torch.from_numpy(fold.train_index)])
        torch.testing.assert_close(fold.scaled_maps, scale_maps(fold.anomaly_maps, fold.scale))


def test_prepare_folds_trains_colourisers_on_each_folds_training_part_only(dataset, monkeypatch):
    calls = []
    _fake_maps(monkeypatch, calls)
    prepared = prepare_folds(dataset, folds=3, seed=5, colorizer_epochs=7, cross_fit_parts=3, progress=False)
    for fold, (train_index, epochs, cross_fit_parts, seed) in zip(prepared, calls):
        assert train_index == fold.train_index.tolist() and (epochs, cross_fit_parts) == (7, 3)
        assert fold.scale < 1
    assert len({seed for *_, seed in calls}) == 3  # each fold's colourisers get their own seed


@pytest.mark.parametrize("counts, folds, message", [
    ((5, 2), 3, "2 anomalous images, fewer than folds=3"),
    ((2, 5), 3, "2 normal images, fewer than folds=3"),
    ((6, 0), 2, "only normal"),
    ((6, 3), 1, "folds must be an int >= 2"),
])
def test_prepare_folds_rejects_data_that_cannot_be_split(counts, folds, message):
    labels = torch.tensor([0] * counts[0] + [1] * counts[1])
    dataset = AnomalyDataset(torch.rand(len(labels), 3, SIZE, SIZE), labels, masks=None, name="counts")
    with pytest.raises(ValueError, match=message):
        prepare_folds(dataset, folds=folds, colorizer_epochs=1, progress=False)


def test_cross_validate_repeats_for_a_seed_and_summarises_the_folds(dataset, folds):
    def run(**kwargs):
        return cross_validate("caan_mobilenet", dataset, folds=2, seed=0, adn="cnn", attention_point=3, epochs=1,
                              progress=False, **kwargs)

    first = run(fold_maps=folds)
    again = run(fold_maps=folds)
    assert first.folds == again.folds
    assert [fold["fold"] for fold in first.folds] == [0, 1]
    assert [fold["n_test"] for fold in first.folds] == [len(fold.test_index) for fold in folds]
    assert first.mean["f1"] == pytest.approx(np.mean([fold["f1"] for fold in first.folds]))
    assert first.std["auroc"] == pytest.approx(np.std([fold["auroc"] for fold in first.folds]))
    assert str(first) == f"{first.mean['f1']:.3f} ± {first.std['f1']:.3f}"
    assert first.label == "CNN + MobileNet-small CAAN"
    assert first.params == sum(p.numel() for p in make_model("caan_mobilenet", "cnn", 3, SIZE).parameters())


def test_cross_validate_with_another_seed_trains_other_models_on_the_same_folds(dataset, folds):
    def run(seed):
        return cross_validate("baseline", dataset, folds=2, seed=seed, adn="cnn", epochs=1, batch_size=4,
                              progress=False, fold_maps=folds)

    assert [fold["history"] for fold in run(1).folds] != [fold["history"] for fold in run(0).folds]


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="resnet"), "variant"),
    (dict(variant="caan_resnet"), "attention_point"),
    (dict(variant="baseline", adn="alexnet"), "alexnet"),
    (dict(variant="baseline", epochs=0), "epochs"),
    (dict(variant="baseline", augment="yes"), "augment"),
    (dict(variant="baseline", repeats=0), "repeats"),
])
def test_cross_validate_rejects_bad_settings_before_training(dataset, folds, kwargs, message):
    kwargs = dict(dict(adn="cnn", epochs=1), **kwargs)
    with pytest.raises(ValueError, match=message):
        cross_validate(dataset=dataset, folds=2, progress=False, fold_maps=folds, **kwargs)


def test_cross_validate_rejects_folds_of_another_split(dataset, folds):
    with pytest.raises(ValueError, match="fold_maps holds 2 folds but folds=3"):
        cross_validate("baseline", dataset, folds=3, adn="cnn", epochs=1, progress=False, fold_maps=folds)
    with pytest.raises(ValueError, match=r"folds=2 x repeats=2 = 4"):
        cross_validate("baseline", dataset, folds=2, adn="cnn", epochs=1, progress=False, fold_maps=folds, repeats=2)


# Repeats -------------------------------------------------------------------------------------------------
def test_repeats_are_differently_seeded_splits_that_repeat_for_a_seed(dataset, monkeypatch):
    _fake_maps(monkeypatch)
    prepared = prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False, repeats=3)
    assert [(fold.repeat, fold.number) for fold in prepared] == [(r, k) for r in range(3) for k in range(2)]
    single = prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False)
    for one, first_repeat in zip(single, prepared[:2]):  # repeat 0 is the paper's single split
        assert np.array_equal(one.test_index, first_repeat.test_index)
    splits = [tuple(sorted(fold.test_index.tolist())) for fold in prepared if fold.number == 0]
    assert len(set(splits)) == 3  # each repeat splits differently
    for repeat in range(3):
        tested = np.concatenate([fold.test_index for fold in prepared if fold.repeat == repeat])
        assert sorted(tested.tolist()) == list(range(len(dataset.labels)))  # a partition in every repeat
    again = prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False, repeats=3)
    assert all(np.array_equal(a.test_index, b.test_index) and torch.equal(a.scaled_maps, b.scaled_maps)
               for a, b in zip(prepared, again))


def test_cross_validate_with_repeats_gives_one_record_per_fold_of_every_repeat(dataset, monkeypatch):
    _fake_maps(monkeypatch)
    prepared = prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False, repeats=2)

    def run():
        return cross_validate("direct_attention", dataset, folds=2, adn="cnn", attention_point=2, epochs=1,
                              batch_size=4, progress=False, fold_maps=prepared, repeats=2, augment=True)

    first = run()
    assert [(fold["repeat"], fold["fold"]) for fold in first.folds] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert first.folds == run().folds
    assert first.folds[0]["history"] != first.folds[2]["history"]  # another repeat, other seeds


# The map alone and a fair attention point ----------------------------------------------------------------
def test_map_alone_ranks_test_images_by_their_image_score(dataset, folds):
    result = map_alone(dataset, folds, adn="cnn")
    assert result.label == "Colour anomaly map alone (no training)" and result.params == 0
    for fold, record in zip(folds, result.folds):
        scores = image_score(fold.anomaly_maps[torch.from_numpy(fold.test_index)])
        labels = dataset.labels[torch.from_numpy(fold.test_index)]
        assert record["auroc"] == pytest.approx(roc_auc_score(labels, scores))
        predicted = scores.numpy() >= record["threshold"]
        assert record["f1"] == pytest.approx(f1_score(labels, predicted, zero_division=0))


def test_choose_point_looks_only_at_the_training_part(dataset, folds, monkeypatch):
    evaluated = []
    original = ablation_module.evaluate

    def spy(model, images, maps, labels, device=None):
        evaluated.append(images)
        return original(model, images, maps, labels, device)

    monkeypatch.setattr(ablation_module, "evaluate", spy)
    fold = folds[0]
    point, aurocs = choose_point("direct_attention", dataset, fold, (1, 4), adn="cnn", epochs=1, batch_size=4)
    assert set(aurocs) == {1, 4} and point == max(aurocs, key=aurocs.get)
    test_images = dataset.images[torch.from_numpy(fold.test_index)]
    for images in evaluated:
        assert not any(torch.equal(image, test_image) for image in images for test_image in test_images)




# Table 3 ---------------------------------------------------------------------------------------------------
def test_run_ablation_runs_every_variant_at_every_point_and_saves_what_load_results_reads(dataset, folds, tmp_path):
    table = run_ablation(dataset, adn="cnn", variants=("baseline", "direct_attention"), attention_points=(1, 4),
                         folds=2, epochs=1, out_dir=tmp_path, progress=False, fold_maps=folds)
    assert [(result.variant, result.attention_point) for result in table.results] == \
        [("map_alone", None), ("baseline", None), ("direct_attention", 1), ("direct_attention", 4),
         ("direct_attention", None)]  # the last: the point chosen on validation in each fold
    assert [fold["attention_point"] for fold in table.results[-1].folds] != [None, None]
    assert [row.variant for row in table.rows] == ["map_alone", "baseline", "direct_attention"]
    assert table.fold_maps is folds
    assert table.config["adn"] == "cnn" and table.config["lr"] == 1e-4 and table.config["n_anomalous"] == 8
    assert table.config["repeats"] == 1 and table.config["augment"] is False and table.config["choose_points"]
    assert {"torch", "device", "device_name", "threads", "date"} <= set(table.environment)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.csv", "results.json", "results.md"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["results"]) == 5 and all(len(result["folds"]) == 2 for result in saved["results"])
    assert (tmp_path / "results.md").read_text() == str(table) + "\n"
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + len(table.lines())
    loaded = load_results(tmp_path)
    assert str(loaded) == str(table) and loaded.results == table.results and loaded.config == table.config
    assert loaded.fold_maps is None


def test_run_ablation_saves_after_every_cross_validation(dataset, folds, tmp_path, monkeypatch):
    saved_counts = []
    original = ablation_module.AblationTable.save

    def spy(table, out_dir):
        saved_counts.append(len(table.results))
        return original(table, out_dir)

    monkeypatch.setattr(ablation_module.AblationTable, "save", spy)
    run_ablation(dataset, adn="cnn", variants=("baseline", "direct_attention"), attention_points=(2,), folds=2,
                 epochs=1, out_dir=tmp_path, progress=False, fold_maps=folds)
    assert saved_counts == [2, 3]  # the map alone comes with the first


def test_run_ablation_rejects_bad_variants_before_training(dataset):
    with pytest.raises(ValueError, match="unknown variant"):
        run_ablation(dataset, adn="cnn", variants=("baseline", "lea"), folds=2, progress=False)
    with pytest.raises(ValueError, match="attention_points is empty"):
        run_ablation(dataset, adn="cnn", variants=("caan_resnet",), attention_points=(), folds=2, progress=False)
    with pytest.raises(ValueError, match="the string 'baseline'"):
        run_ablation(dataset, adn="cnn", variants="baseline", folds=2, progress=False)
