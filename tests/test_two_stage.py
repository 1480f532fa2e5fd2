"""Two-stage training (lea_tiny.two_stage): the CAAN learns the maps first, then stays frozen or is fine-tuned."""

import pytest
import torch

import lea_tiny.two_stage as two_stage_module
from lea_tiny.attention import make_model
from lea_tiny.train import f1_and_auroc
from lea_tiny.two_stage import fit_two_stage, train_caan

SIZE = 32
EPOCHS = dict(caan_epochs=2, epochs=1)


@pytest.fixture(scope="module")
def data():
    """12 images; the anomalies' maps carry a hot square, the normals' a faint noise."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 6)
    maps = 0.1 * torch.rand(12, 1, SIZE, SIZE, generator=generator)
    maps[labels == 1, :, 8:20, 10:22] = 1.0
    return torch.rand(12, 3, SIZE, SIZE, generator=generator), maps, labels


def _model(gate=False):
    torch.manual_seed(0)
    return make_model("caan_resnet", adn="cnn", attention_point=(2, 3), image_size=SIZE, gate=gate)


def _state(module):
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def _same(first, second):
    return all(torch.equal(first[name], second[name]) for name in first)


def test_after_stage_one_the_caans_head_scores_the_maps(data):
    _, maps, labels = data
    model = _model()
    history = train_caan(model, maps, labels, epochs=10, lr=1e-3, batch_size=4, progress=False)
    assert history["caan_loss"][-1] < history["caan_loss"][0]
    with torch.no_grad():
        caan_logit, _ = model.caan(maps)
    assert f1_and_auroc(torch.sigmoid(caan_logit), labels)["auroc"] == 1.0


def test_a_frozen_caan_keeps_stage_ones_weights_and_a_fine_tuned_one_moves(data):
    _, maps, labels = data
    after_stage_one = _model()
    train_caan(after_stage_one, maps, labels, epochs=EPOCHS["caan_epochs"], batch_size=4, progress=False)

    frozen = _model()
    adn_before = _state(frozen.adn)
    fit_two_stage(frozen, *data, caan="frozen", batch_size=4, progress=False, **EPOCHS)
    assert _same(_state(frozen.caan), _state(after_stage_one.caan))  # BatchNorm statistics included
    assert not _same(_state(frozen.adn), adn_before)
    assert all(p.requires_grad for p in frozen.caan.parameters())  # unfrozen again once stage 2 is done

    fine_tuned = _model()
    fit_two_stage(fine_tuned, *data, caan="fine_tune", batch_size=4, progress=False, **EPOCHS)
    assert not _same(_state(fine_tuned.caan), _state(after_stage_one.caan))


def test_same_seed_same_numbers_with_a_gate(data):
    runs = []
    for _ in range(2):
        model = _model(gate=True)
        history = fit_two_stage(model, *data, caan="fine_tune", batch_size=4, seed=1, progress=False, **EPOCHS)
        runs.append((history, _state(model)))
    assert runs[0][0] == runs[1][0] and _same(runs[0][1], runs[1][1])
    assert all(weight != 0 for weight in model.gate_weights().values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(caan="freeze"), "caan must be one of 'frozen', 'fine_tune'"),
        (dict(caan_epochs=0), "caan_epochs must be an int >= 1"),
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(caan_lr=-1.0), "lr .* must be a finite number > 0"),
        (dict(model="baseline"), "needs a CAAN|with a CAAN"),
    ],
)
def test_bad_arguments_are_refused_before_any_training(data, monkeypatch, kwargs, message):
    monkeypatch.setattr(two_stage_module, "train_caan", lambda *args, **kwargs: pytest.fail("trained"))
    model = make_model(kwargs.pop("model"), adn="cnn", image_size=SIZE) if "model" in kwargs else _model()
    with pytest.raises(ValueError, match=message):
        fit_two_stage(model, *data, **{**EPOCHS, "progress": False, **kwargs})
