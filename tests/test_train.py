"""Training and measuring one LEA-Net (lea_tiny.train): Eq. 1, augmentation, the paper's metric, checkpoints."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn

from conftest import SIZE
from lea_tiny.attention import make_model
from lea_tiny.train import (DIHEDRAL_TRANSFORMS, default_lr, dihedral, evaluate, fit, joint_loss, load_checkpoint,
                            save_checkpoint)


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


# Augmentation ------------------------------------------------------------------------------------------
def test_the_eight_dihedral_transforms_are_the_symmetries_of_the_square():
    square = torch.arange(9.0).view(1, 3, 3)
    seen = [dihedral(square, transform) for transform in range(DIHEDRAL_TRANSFORMS)]
    assert torch.equal(seen[0], square)
    assert len({tuple(view.flatten().tolist()) for view in seen}) == 8  # all different
    torch.testing.assert_close(seen[1], torch.rot90(square, 1, dims=(-2, -1)))
    torch.testing.assert_close(seen[4], square.flip(-1))
    for view in seen:  # each is a permutation of the pixels
        assert sorted(view.flatten().tolist()) == list(range(9))


def test_augmentation_moves_images_and_maps_together(training_data, monkeypatch):
    images, maps, labels = training_data
    maps = images[:, :1].clone()  # a "map" that is the image's red channel: any misalignment shows
    seen = []

    class Spy(nn.Module):
        adn_name, variant, attention_point = "cnn", "baseline", None

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))

        def forward(self, rgb, anomaly_map):
            seen.append((rgb.detach().clone(), anomaly_map.detach().clone()))
            return rgb.mean(dim=(1, 2, 3)) * self.weight, None

    fit(Spy(), images, maps, labels, epochs=3, batch_size=4, augment=True, progress=False)
    assert all(torch.equal(rgb[:, :1], anomaly_map) for rgb, anomaly_map in seen)
    originals = {tuple(image.flatten().tolist()) for image in images}
    moved = [rgb for rgb, _ in seen if any(tuple(image.flatten().tolist()) not in originals for image in rgb)]
    assert moved, "augment=True never showed a transformed batch"
    seen.clear()
    fit(Spy(), images, maps, labels, epochs=1, batch_size=4, augment=False, progress=False)
    assert all(tuple(image.flatten().tolist()) in originals for rgb, _ in seen for image in rgb)


def test_augmented_training_repeats_for_a_seed_and_differs_from_plain_training(training_data):
    first = _fit("direct_attention", training_data, point=1, seed=3, batch_size=4, augment=True)[1]
    assert first == _fit("direct_attention", training_data, point=1, seed=3, batch_size=4, augment=True)[1]
    assert first != _fit("direct_attention", training_data, point=1, seed=3, batch_size=4)[1]
    with pytest.raises(ValueError, match="augment must be True or False"):
        _fit("baseline", training_data, augment=1)


def test_on_epoch_end_sees_every_epoch_in_eval_mode_and_changes_nothing(training_data):
    calls = []

    def record(epoch, model):
        calls.append((epoch, model.training, evaluate(model, *training_data)["auroc"]))

    model, history = _fit("baseline", training_data, epochs=2, seed=1, batch_size=4, on_epoch_end=record)
    assert [(epoch, training) for epoch, training, _ in calls] == [(0, False), (1, False)]
    assert calls[-1][2] == evaluate(model, *training_data)["auroc"]  # the last call saw the final weights
    assert history == _fit("baseline", training_data, epochs=2, seed=1, batch_size=4)[1]


def test_fit_with_a_lone_last_image_skips_it(training_data):
    images, maps, labels = training_data  # 12 images, batch 11: the last batch would hold one image
    _, history = _fit("baseline", training_data, batch_size=len(labels) - 1)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


@pytest.mark.parametrize("change, message", [
    (lambda i, m, l: (i[:, :1], m, l), r"images must be a float32 tensor of shape \(N, 3, H, W\)"),
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
    assert "caan_auroc" not in result  # no CAAN, no CAAN head


def test_evaluate_scores_the_caan_head_from_its_own_logit(training_data):
    images, maps, labels = training_data
    model = make_model("caan_resnet", adn="cnn", attention_point=2, image_size=SIZE).eval()
    result = evaluate(model, images, maps, labels)
    with torch.inference_mode():
        caan_scores = torch.sigmoid(model(images, maps)[1])
    torch.testing.assert_close(result["caan_scores"], caan_scores)
    assert result["caan_auroc"] == pytest.approx(roc_auc_score(labels, caan_scores))
    assert result["caan_f1"] == pytest.approx(f1_score(labels, caan_scores > 0.5, zero_division=0))


def test_evaluate_counts_a_score_of_exactly_one_half_as_normal_and_has_no_zero_division():
    labels = torch.tensor([0, 1])
    result = evaluate(ScoreFromBrightness(), _constant_images([0.2, 0.5]), torch.zeros(2, 1, 4, 4), labels)
    assert result["scores"][1].item() == 0.5
    assert result["f1"] == 0.0  # nothing predicted anomalous: F1 is 0, without a warning
    assert result["auroc"] == 1.0


def test_evaluate_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        evaluate(ScoreFromBrightness(), _constant_images([0.2, 0.5]), torch.zeros(2, 1, 4, 4), torch.tensor([1, 1]))


# Checkpoints -------------------------------------------------------------------------------------------
def test_a_checkpoint_gives_back_the_same_model(training_data, tmp_path):
    images, maps, _ = training_data
    model = make_model("caan_resnet", adn="cnn", attention_point=2, image_size=SIZE)
    model(images, maps)  # in training mode: moves BatchNorm's running statistics off their defaults
    model.eval()
    path = tmp_path / "lea_net.pt"
    save_checkpoint(path, model, dict(image_size=SIZE, map_scale=12.5))
    assert [p.name for p in tmp_path.iterdir()] == ["lea_net.pt"]  # the temporary file was renamed
    (tmp_path / "plain").write_text("")
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's owner-only 0600
    (tmp_path / "plain").unlink()
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
