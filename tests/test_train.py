"""Training and measuring LEA-Net (lea_tiny.train): Eq. 1, the paper's metric, folds, Table 3, checkpoints."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn

import lea_tiny.train as train_module
from lea_tiny.attention import make_model
from lea_tiny.colorize import map_scale, scale_maps
from lea_tiny.data import AnomalyDataset, make_dataset
from lea_tiny.train import (AblationTable, CrossValidation, cross_validate, default_lr, evaluate, fit, joint_loss,
                            load_checkpoint, load_results, prepare_folds, run_ablation, save_checkpoint)

SIZE = 32


@pytest.fixture(scope="module")
def dataset():
    return make_dataset("retina", n_normal=16, n_anomalous=8, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def folds(dataset):
    return prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False)


@pytest.fixture(scope="module")
def training_data(dataset, folds):
    train = torch.from_numpy(folds[0].train_index)
    return dataset.images[train], folds[0].scaled_maps[train], dataset.labels[train]


def _fit(variant, data, point=None, **kwargs):
    torch.manual_seed(0)
    model = make_model(variant, adn="cnn", attention_point=point, image_size=SIZE)
    return model, fit(model, *data, epochs=kwargs.pop("epochs", 1), progress=False, **kwargs)


# Section 4-2 and Eq. 1 ---------------------------------------------------------------------------------
def test_default_lr_is_the_papers():
    assert default_lr("resnet18") == 1e-4 and default_lr("cnn") == 1e-4
    assert default_lr("vgg16") == 1e-5 and default_lr("vgg19") == 1e-5
    with pytest.raises(ValueError, match="unknown ADN"):
        default_lr("alexnet")


def test_joint_loss_is_the_sum_of_two_binary_cross_entropies():
    adn_logit, caan_logit = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-0.3, 0.7, 1.5])
    labels = torch.tensor([1, 0, 0])

    def bce(logit):  # by hand: -[y log p + (1 - y) log(1 - p)], averaged
        p = 1 / (1 + np.exp(-logit.numpy().astype(np.float64)))
        y = labels.numpy()
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    loss, adn_loss, caan_loss = joint_loss(adn_logit, caan_logit, labels)
    assert adn_loss.item() == pytest.approx(bce(adn_logit), rel=1e-6)
    assert caan_loss.item() == pytest.approx(bce(caan_logit), rel=1e-6)
    assert loss.item() == pytest.approx(bce(adn_logit) + bce(caan_logit), rel=1e-6)
    loss, adn_loss, caan_loss = joint_loss(adn_logit, None, labels)
    assert caan_loss is None and loss.item() == pytest.approx(bce(adn_logit), rel=1e-6)


def test_the_caan_learns_from_both_terms_of_eq_1(training_data):
    images, maps, labels = training_data
    model = make_model("caan_mobilenet", adn="cnn", attention_point=2, image_size=SIZE)
    adn_logit, caan_logit = model(images[:8], maps[:8])
    _, adn_loss, caan_loss = joint_loss(adn_logit, caan_logit, labels[:8])
    parameters = list(model.parameters())

    def reached(loss):
        grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        return {index for index, grad in enumerate(grads) if grad is not None and grad.abs().sum() > 0}

    caan_parameters = reached(caan_loss)  # the ADN's parameters do not influence the CAAN's logit
    assert caan_parameters and len(caan_parameters) < len(parameters)
    # Through the attention map the ADN's loss reaches the CAAN's early blocks too.
    assert reached(adn_loss) & caan_parameters


def test_fit_records_eq_1_per_epoch(training_data):
    _, history = _fit("caan_mobilenet", training_data, point=2, epochs=2)
    assert len(history["loss"]) == len(history["adn_loss"]) == len(history["caan_loss"]) == 2
    np.testing.assert_allclose(history["loss"], np.add(history["adn_loss"], history["caan_loss"]), rtol=1e-5)
    _, history = _fit("baseline", training_data, epochs=2)
    assert history["caan_loss"] == [] and history["loss"] == history["adn_loss"]


def test_fit_changes_the_weights_and_repeats_for_a_seed(training_data):
    model, first = _fit("direct_attention", training_data, point=1, seed=3, batch_size=4)
    torch.manual_seed(0)  # as _fit does: the same initial weights
    initial = make_model("direct_attention", adn="cnn", attention_point=1, image_size=SIZE)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))
    again_model, again = _fit("direct_attention", training_data, point=1, seed=3, batch_size=4)
    assert first == again
    for (name, value), other in zip(model.state_dict().items(), again_model.state_dict().values()):
        assert torch.equal(value, other), name
    _, other_seed = _fit("direct_attention", training_data, point=1, seed=4, batch_size=4)  # another batch order
    assert other_seed != first
    assert not model.training  # left in eval mode


def test_fit_with_a_lone_last_image_skips_it(training_data):
    images, maps, labels = training_data  # 12 images, batch 11: the last batch would hold one image
    _, history = _fit("baseline", training_data, batch_size=len(labels) - 1)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


@pytest.mark.parametrize("change, message", [
    (lambda i, m, l: (i[:, :1], m, l), r"images must be a tensor of shape \(N, 3, H, W\)"),
    (lambda i, m, l: (i, m[:-1], l), "anomaly_maps must have shape"),
    (lambda i, m, l: (i, m[:, 0], l), "anomaly_maps must have shape"),
    (lambda i, m, l: (i, m * 50, l), "scale_maps"),
    (lambda i, m, l: (i * 2, m, l), r"values in \[0, 1\]"),
    (lambda i, m, l: (i, m, l[:-1]), "labels must have shape"),
    (lambda i, m, l: (i, m, l * 2), "0 \\(normal\\) or 1"),
    (lambda i, m, l: (i, m, l.float()), "integers"),
    (lambda i, m, l: (i, m, torch.zeros_like(l)), "only normal"),
    (lambda i, m, l: (i, m, torch.ones_like(l)), "only anomalous"),
])
def test_fit_rejects_bad_input(training_data, change, message):
    model = make_model("baseline", adn="cnn", image_size=SIZE)
    with pytest.raises(ValueError, match=message):
        fit(model, *change(*training_data), epochs=1, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "epochs"), (dict(epochs=1, batch_size=1), "batch_size"), (dict(epochs=1, lr=-1.0), "lr"),
])
def test_fit_rejects_bad_settings(training_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(make_model("baseline", adn="cnn", image_size=SIZE), *training_data, progress=False, **kwargs)


def test_fit_rejects_something_that_is_not_a_lea_net_model(training_data):
    with pytest.raises(ValueError, match="make_model"):
        fit(nn.Linear(2, 1), *training_data, epochs=1, progress=False)


# The paper's metric ------------------------------------------------------------------------------------
class ScoreFromBrightness(nn.Module):
    """A model whose ADN logit is 10 * (mean pixel - 0.5): its scores are known in advance."""
    adn_name = "cnn"
    variant = "baseline"
    attention_point = None

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives it a device

    def forward(self, rgb, anomaly_map):
        return 10 * (rgb.mean(dim=(1, 2, 3)) - 0.5) + self.anchor, None


def _constant_images(values):
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()


def test_evaluate_matches_hand_computed_f1_and_auroc():
    brightness = [0.1, 0.4, 0.6, 0.3, 0.7, 0.9]
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    result = evaluate(ScoreFromBrightness(), _constant_images(brightness), torch.zeros(6, 1, 4, 4), labels)
    # Predicted anomalous (score > 0.5): images 2, 4, 5 -> TP 2, FP 1, FN 1 -> F1 = 2/3.
    assert result["f1"] == pytest.approx(2 / 3)
    # Of the 9 (normal, anomalous) pairs, the anomalous image scores higher in 7.
    assert result["auroc"] == pytest.approx(7 / 9)
    expected = torch.sigmoid(10 * (torch.tensor(brightness) - 0.5))
    torch.testing.assert_close(result["scores"], expected)
    assert result["f1"] == pytest.approx(f1_score(labels, expected > 0.5))
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, expected))


def test_evaluate_counts_a_score_of_exactly_one_half_as_normal_and_has_no_zero_division():
    labels = torch.tensor([0, 1])
    result = evaluate(ScoreFromBrightness(), _constant_images([0.2, 0.5]), torch.zeros(2, 1, 4, 4), labels)
    assert result["scores"][1].item() == 0.5
    assert result["f1"] == 0.0  # nothing predicted anomalous: F1 is 0, without a warning
    assert result["auroc"] == 1.0


def test_evaluate_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        evaluate(ScoreFromBrightness(), _constant_images([0.2, 0.5]), torch.zeros(2, 1, 4, 4), torch.tensor([1, 1]))


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

    def fake_fold_anomaly_maps(images, labels, train_index, *, epochs, cross_fit, seed, device):
        calls.append((train_index.tolist(), epochs, cross_fit, seed))
        maps = torch.rand(len(images), SIZE, SIZE)
        maps[~torch.isin(torch.arange(len(images)), train_index)] = 1000.0  # test maps must not move the scale
        return maps

    monkeypatch.setattr(train_module, "fold_anomaly_maps", fake_fold_anomaly_maps)
    prepared = prepare_folds(dataset, folds=3, seed=5, colorizer_epochs=7, cross_fit=3, progress=False)
    for fold, (train_index, epochs, cross_fit, seed) in zip(prepared, calls):
        assert train_index == fold.train_index.tolist() and (epochs, cross_fit) == (7, 3)
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
])
def test_cross_validate_rejects_bad_settings_before_training(dataset, folds, kwargs, message):
    kwargs = dict(dict(adn="cnn", epochs=1), **kwargs)
    with pytest.raises(ValueError, match=message):
        cross_validate(dataset=dataset, folds=2, progress=False, fold_maps=folds, **kwargs)


def test_cross_validate_rejects_folds_of_another_split(dataset, folds):
    with pytest.raises(ValueError, match="fold_maps holds 2 folds but folds=3"):
        cross_validate("baseline", dataset, folds=3, adn="cnn", epochs=1, progress=False, fold_maps=folds)


# Table 3 -----------------------------------------------------------------------------------------------
def _result(variant, point, f1s):
    return CrossValidation(variant, "resnet18", point, 11_200_000,
                           [dict(fold=i, f1=f1, auroc=0.5 + f1 / 2) for i, f1 in enumerate(f1s)])


def test_the_table_keeps_the_best_attention_point_by_mean_f1():
    table = AblationTable([_result("baseline", None, [0.6, 0.7]), _result("caan_mobilenet", 1, [0.5, 0.7]),
                           _result("caan_mobilenet", 2, [0.9, 0.9]), _result("caan_mobilenet", 3, [0.875, 0.875]),
                           _result("caan_mobilenet", 4, [0.9, 0.9])],  # a tie: the earlier point stays
                          config={}, environment={})
    assert [(row.variant, row.attention_point) for row in table.rows] == [("baseline", None), ("caan_mobilenet", 2)]
    lines = str(table).splitlines()
    assert lines[0] == "| model | params | F1 (best point) | AUROC |"
    assert lines[2] == "| ResNet18 | 11.2M | 0.650 ± 0.050 | 0.825 ± 0.025 |"
    assert lines[3] == "| ResNet18 + MobileNet-small CAAN | 11.2M | 0.900 ± 0.000 (2) | 0.950 ± 0.000 |"


def test_run_ablation_runs_every_variant_at_every_point_and_saves_what_load_results_reads(dataset, folds, tmp_path):
    table = run_ablation(dataset, adn="cnn", variants=("baseline", "direct_attention"), attention_points=(1, 4),
                         folds=2, epochs=1, out_dir=tmp_path, progress=False, fold_maps=folds)
    assert [(result.variant, result.attention_point) for result in table.results] == \
        [("baseline", None), ("direct_attention", 1), ("direct_attention", 4)]
    assert [row.variant for row in table.rows] == ["baseline", "direct_attention"]
    assert table.fold_maps is folds
    assert table.config["adn"] == "cnn" and table.config["lr"] == 1e-4 and table.config["n_anomalous"] == 8
    assert {"torch", "device", "device_name", "threads", "date"} <= set(table.environment)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.csv", "results.json", "results.md"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["results"]) == 3 and all(len(result["folds"]) == 2 for result in saved["results"])
    assert (tmp_path / "results.md").read_text() == str(table) + "\n"
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3  # header + one row per variant
    loaded = load_results(tmp_path)
    assert str(loaded) == str(table) and loaded.results == table.results and loaded.config == table.config
    assert loaded.fold_maps is None


def test_run_ablation_rejects_unknown_variants_before_training(dataset):
    with pytest.raises(ValueError, match="unknown variant"):
        run_ablation(dataset, adn="cnn", variants=("baseline", "lea"), folds=2, progress=False)
    with pytest.raises(ValueError, match="attention_points is empty"):
        run_ablation(dataset, adn="cnn", variants=("caan_resnet",), attention_points=(), folds=2, progress=False)


def test_load_results_reports_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved results"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a results.json written by lea_tiny"):
        load_results(tmp_path / "results.json")


# Checkpoints -------------------------------------------------------------------------------------------
def test_a_checkpoint_gives_back_the_same_model(training_data, tmp_path):
    images, maps, _ = training_data
    model = make_model("caan_resnet", adn="cnn", attention_point=2, image_size=SIZE)
    model(images, maps)  # in training mode: moves BatchNorm's running statistics off their defaults
    model.eval()
    path = tmp_path / "lea_net.pt"
    save_checkpoint(path, model, dict(image_size=SIZE, map_scale=12.5))
    assert [p.name for p in tmp_path.iterdir()] == ["lea_net.pt"]  # the temporary file was renamed
    loaded, config = load_checkpoint(path)
    assert config == dict(image_size=SIZE, map_scale=12.5, variant="caan_resnet", adn="cnn", attention_point=2)
    assert not loaded.training
    with torch.inference_mode():
        for expected, got in zip(model(images, maps), loaded(images, maps)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temporary_file(training_data, tmp_path, monkeypatch):
    model = make_model("baseline", adn="cnn", image_size=SIZE)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, dict(image_size=SIZE))
    before = path.read_bytes()

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, dict(image_size=SIZE, note="second"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_checkpoints_report_bad_files_and_configs(tmp_path):
    model = make_model("baseline", adn="cnn", image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable lea_tiny checkpoint"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a readable lea_tiny checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="image_size"):
        save_checkpoint(tmp_path / "a.pt", model, dict(scale=1.0))
    with pytest.raises(ValueError, match="plain values"):
        save_checkpoint(tmp_path / "a.pt", model, dict(image_size=SIZE, scale=torch.tensor(1.0)))
