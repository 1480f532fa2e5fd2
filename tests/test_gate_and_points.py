"""The follow-up's options on the attention (Hayakawa et al. 2023): a learnable gate, several points at once."""

from itertools import combinations

import pytest
import torch

from lea_tiny.attention import ATTENTION_POINTS, ATTENTION_VARIANTS, apply_attention, make_model
from lea_tiny.train import fit, load_checkpoint, save_checkpoint

SIZE = 32
EVERY_COMBINATION = [points for count in range(1, 6) for points in combinations(ATTENTION_POINTS, count)]


def _inputs(count=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, SIZE, SIZE, generator=generator), torch.rand(count, 1, SIZE, SIZE, generator=generator)


# The gate: f' = f + w M f, w starting at 0 --------------------------------------------------------------
def test_a_gate_of_zero_leaves_the_features_and_a_gate_of_one_is_eq_3():
    features, attention = torch.randn(2, 4, 4, 4), torch.rand(2, 1, 4, 4)
    assert torch.equal(apply_attention(features, attention, torch.tensor(0.0)), features)
    torch.testing.assert_close(apply_attention(features, attention, torch.tensor(1.0)),
                               apply_attention(features, attention))


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_a_gated_model_starts_as_the_plain_adn(variant):
    torch.manual_seed(0)
    gated = make_model(variant, adn="cnn", attention_point=(2, 4), image_size=SIZE, gate=True).eval()
    baseline = make_model("baseline", adn="cnn", image_size=SIZE).eval()
    baseline.adn.load_state_dict(gated.adn.state_dict())
    rgb, anomaly_map = _inputs()
    with torch.no_grad():
        assert torch.equal(gated(rgb, anomaly_map)[0], baseline(rgb, anomaly_map)[0])


def test_the_gate_learns_and_while_it_is_zero_the_adn_sends_the_caan_nothing():
    torch.manual_seed(0)
    model = make_model("caan_resnet", adn="cnn", attention_point=(1, 3), image_size=SIZE, gate=True)
    adn_logit, _ = model(*_inputs())
    adn_logit.sum().backward()  # the ADN's loss alone
    assert (model.gates.grad != 0).all()
    assert all(p.grad is None or not p.grad.any() for p in model.caan.parameters())


def test_the_learnt_gates_can_be_read_per_point():
    model = make_model("direct_attention", adn="cnn", attention_point=(1, 4), image_size=SIZE, gate=True)
    assert model.gate_weights() == {1: 0.0, 4: 0.0}
    with torch.no_grad():
        model.gates.copy_(torch.tensor([0.5, -0.25]))
    assert model.gate_weights() == {1: 0.5, 4: -0.25}
    assert make_model("direct_attention", adn="cnn", attention_point=2, image_size=SIZE).gate_weights() == {2: 1.0}


def test_fit_moves_the_gates():
    torch.manual_seed(0)
    model = make_model("caan_mobilenet", adn="cnn", attention_point=(2, 3), image_size=SIZE, gate=True)
    rgb, anomaly_map = _inputs(6)
    fit(model, rgb, anomaly_map, torch.tensor([0, 1] * 3), epochs=1, batch_size=3, lr=1e-2, progress=False)
    assert all(weight != 0 for weight in model.gate_weights().values())


# Several attention points ------------------------------------------------------------------------------
@pytest.mark.parametrize("adn", ["cnn", "resnet18"])
def test_every_combination_of_points_runs_at_32px(adn):
    torch.manual_seed(0)
    rgb, anomaly_map = _inputs()
    # Each of the 31 combinations once, with the three variants and the gate taking turns (building
    # 6 x 31 models would take most of a minute): every variant meets sets of every size.
    for index, points in enumerate(EVERY_COMBINATION):
        variant, gate = ATTENTION_VARIANTS[index % len(ATTENTION_VARIANTS)], index % 2 == 1
        model = make_model(variant, adn=adn, attention_point=points, image_size=SIZE, gate=gate).eval()
        with torch.no_grad():
            adn_logit, caan_logit, features = model(rgb, anomaly_map, return_features=True)
        assert adn_logit.shape == (2,) and (caan_logit is None) == (variant == "direct_attention")
        assert model.attention_point == points and sorted(features["attention"]) == list(points)
        weights = model.gate_weights()
        for point in points:
            size = SIZE // 2**point
            before, attention = features["before"][point], features["attention"][point]
            assert attention.shape == (2, 1, size, size) and before.shape[-2:] == (size, size)
            torch.testing.assert_close(features["points"][point - 1], before + weights[point] * attention * before)


def test_points_are_kept_sorted_and_an_int_stays_an_int():
    assert make_model("caan_resnet", adn="cnn", attention_point=[4, 1], image_size=SIZE).attention_point == (1, 4)
    model = make_model("caan_resnet", adn="cnn", attention_point=3, image_size=SIZE)
    assert model.attention_point == 3 and type(model.attention_point) is int
    _, _, features = model(*_inputs(), return_features=True)
    assert features["attention"].shape == (2, 1, 4, 4)  # a tensor, as for the paper's one point


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attention_point=(2, 2)), "must not repeat a point"),
        (dict(attention_point=(1, 6)), "attention_point in 1..5"),
        (dict(attention_point=(0, 3)), "attention_point in 1..5"),
        (dict(attention_point=()), "non-empty tuple"),
        (dict(attention_point=(True, 2)), "attention_point in 1..5"),
        (dict(attention_point=2, gate=1), "gate must be True or False"),
        (dict(variant="4ch_input", attention_point=None, gate=True), "no attention point to gate"),
        (dict(variant="baseline", attention_point=(1, 2)), "has no attention point"),
    ],
)
def test_bad_points_and_gates_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_model(**{"variant": "caan_resnet", "adn": "cnn", "image_size": SIZE, **kwargs})


def test_a_checkpoint_gives_back_a_gated_model_of_several_points(tmp_path):
    torch.manual_seed(0)
    model = make_model("caan_mobilenet", adn="cnn", attention_point=(1, 3, 5), image_size=SIZE, gate=True)
    rgb, anomaly_map = _inputs()
    model(rgb, anomaly_map)  # in training mode: moves BatchNorm's running statistics off their defaults
    with torch.no_grad():
        model.gates.copy_(torch.tensor([0.3, -0.2, 0.1]))
    model.eval()
    save_checkpoint(tmp_path / "gated.pt", model, dict(image_size=SIZE))
    loaded, config = load_checkpoint(tmp_path / "gated.pt")
    assert config["gate"] is True and tuple(config["attention_point"]) == (1, 3, 5)
    assert loaded.attention_point == (1, 3, 5) and loaded.gate_weights() == model.gate_weights()
    with torch.inference_mode():
        for expected, got in zip(model(rgb, anomaly_map), loaded(rgb, anomaly_map)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
