"""The follow-ups' options as protocol settings: gate, two-stage CAAN, several points, the map source."""

from dataclasses import replace

import pytest
import torch

import lea_tiny.ablation as ablation_module
from lea_tiny.__main__ import build_parser
from lea_tiny.ablation import cross_validate, prepare_folds, run_ablation
from lea_tiny.autoencoder import fold_reconstruction_maps
from lea_tiny.compare import load_results
from lea_tiny.protocol import MAP_SOURCES, TEACHING
from lea_tiny.two_stage import fit_two_stage

TINY = TEACHING.replace(folds=2, epochs=1, colorizer_epochs=1, augment=False)


def test_the_gate_is_learnt_per_fold_and_reported(dataset, folds):
    result = cross_validate("direct_attention", dataset, TINY.replace(gate=True), (1, 3), fold_maps=folds,
                            progress=False)
    for fold in result.folds:
        assert set(fold["gate_weights"]) == {"1", "3"}
        assert all(weight != 0 for weight in fold["gate_weights"].values())  # Adam moved them from 0
    plain = cross_validate("direct_attention", dataset, TINY, (1, 3), fold_maps=folds, progress=False)
    assert "gate_weights" not in plain.folds[0] and plain.params == result.params - 2


def test_the_gate_leaves_the_baseline_alone(dataset, folds):
    gated = cross_validate("baseline", dataset, TINY.replace(gate=True), fold_maps=folds, progress=False)
    plain = cross_validate("baseline", dataset, TINY, fold_maps=folds, progress=False)
    assert [fold["auroc"] for fold in gated.folds] == [fold["auroc"] for fold in plain.folds]


def test_caan_training_switches_to_two_stages_for_caan_variants_only(dataset, folds, monkeypatch):
    modes = []

    def spy(*args, caan, **kwargs):
        modes.append(caan)
        return fit_two_stage(*args, caan=caan, **kwargs)

    monkeypatch.setattr(ablation_module, "fit_two_stage", spy)
    joint = cross_validate("caan_mobilenet", dataset, TINY, 2, fold_maps=folds, progress=False)
    assert modes == [] and "caan_alone_loss" not in joint.folds[0]["history"]
    for training in ("frozen", "fine_tune"):
        staged = cross_validate("caan_mobilenet", dataset, TINY.replace(caan_training=training), 2, fold_maps=folds,
                                progress=False)
        assert modes[-len(folds):] == [training] * len(folds)
        assert len(staged.folds[0]["history"]["caan_alone_loss"]) == TINY.epochs
    cross_validate("direct_attention", dataset, TINY.replace(caan_training="frozen"), 2, fold_maps=folds,
                   progress=False)
    assert len(modes) == 2 * len(folds)  # no CAAN, nothing to train first


def test_the_map_source_makes_the_folds_maps(dataset, monkeypatch):
    made = []

    def counted(*args, **kwargs):
        made.append(kwargs["epochs"])
        return fold_reconstruction_maps(*args, **kwargs)

    monkeypatch.setitem(MAP_SOURCES, "autoencoder", replace(MAP_SOURCES["autoencoder"], fold_maps=counted))
    prepared = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, map_source="autoencoder")
    assert made == [1, 1]
    expected = fold_reconstruction_maps(dataset.images, dataset.labels, torch.from_numpy(prepared[0].train_index),
                                        epochs=1, seed=0)
    torch.testing.assert_close(prepared[0].anomaly_maps, expected)


def test_saved_maps_of_another_source_are_not_reused(dataset, tmp_path):
    prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=tmp_path)
    colour = torch.load(tmp_path / "repeat0_fold0.pt", weights_only=True)["anomaly_maps"]
    prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=tmp_path, map_source="autoencoder")
    saved = torch.load(tmp_path / "repeat0_fold0.pt", weights_only=True)
    assert saved["settings"]["map_source"] == "autoencoder" and not torch.equal(saved["anomaly_maps"], colour)


def test_several_points_round_trip_through_a_saved_table(dataset, folds, tmp_path):
    table = run_ablation(dataset, TINY.replace(variants=("baseline", "direct_attention"), attention_points=(2, (1, 3))),
                         out_dir=tmp_path, fold_maps=folds, progress=False)
    loaded = load_results(tmp_path)
    assert [result.attention_point for result in loaded.results] == [None, None, 2, (1, 3), None]
    assert str(loaded) == str(table) and "best of 2,1+3 on the test folds" in str(loaded)
    assert {fold["attention_point"] for fold in loaded.results[-1].folds} <= {2, (1, 3)}


@pytest.mark.parametrize("changes, message", [
    (dict(gate=1), "gate must be True or False"),
    (dict(caan_training="stages"), "caan_training must be one of 'joint', 'frozen', 'fine_tune'"),
    (dict(map_source="padim"), "map_source must be one of 'colorization', 'autoencoder'"),
    (dict(attention_points=((1, 1),)), "needs distinct points"),
    (dict(attention_points=((1, 6),)), "every attention point must be an int in 1..5, got 6"),
])
def test_bad_options_are_refused_when_the_protocol_is_made(changes, message):
    with pytest.raises(ValueError, match=message):
        TEACHING.replace(**changes)


def test_the_command_line_takes_every_option():
    args = build_parser().parse_args(["ablation", "--attention-points", "1,3,1+3", "--gate", "--caan-training",
                                      "fine_tune", "--map-source", "autoencoder"])
    assert args.attention_points == [1, 3, (1, 3)]
    assert (args.gate, args.caan_training, args.map_source) == (True, "fine_tune", "autoencoder")
    defaults = build_parser().parse_args(["demo"])
    assert (defaults.gate, defaults.caan_training, defaults.map_source) == (False, "joint", "colorization")


@pytest.mark.parametrize("points, message", [("1+1", "must differ"), ("1+6", "must lie in 1..5"),
                                             ("1+", "separated by commas")])
def test_the_command_line_refuses_bad_points(points, message, capsys):
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["demo", "--attention-points", points])
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_the_map_alone_row_is_named_after_the_maps_the_run_made(dataset, folds):
    reconstruction = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, map_source="autoencoder")
    with pytest.raises(ValueError, match="fold_maps hold colorization maps but the protocol's map_source is"):
        run_ablation(dataset, TINY.replace(variants=("baseline",), map_source="autoencoder"), fold_maps=folds)
    table = run_ablation(dataset, TINY.replace(variants=("baseline",), map_source="autoencoder"),
                         fold_maps=reconstruction, progress=False)
    assert table.lines()[0][0] == "Reconstruction map alone (no training)"
    assert run_ablation(dataset, TINY.replace(variants=("baseline",)), fold_maps=folds,
                        progress=False).lines()[0][0] == "Colour anomaly map alone (no training)"
