"""Eq. 2-3 on hand-made numbers, and the model factory of Table 3."""

import pytest
import torch

import lea_tiny.__main__ as cli
from lea_tiny.attention import ATTENTION_VARIANTS, VARIANTS, Variant, apply_attention, attention_map, make_model
from lea_tiny.compare import CrossValidation


def test_attention_map_is_the_sigmoid_of_the_channel_mean():  # Eq. 2
    features = torch.tensor([[[[0.0, 2.0]], [[2.0, -4.0]]]])  # (1, 2, 1, 2): channel means 1 and -1
    expected = torch.sigmoid(torch.tensor([[[[1.0, -1.0]]]]))
    torch.testing.assert_close(attention_map(features), expected)


def test_apply_attention_scales_every_channel_by_one_plus_m():  # Eq. 3
    features = torch.tensor([[[[1.0, 2.0]], [[-3.0, 4.0]]]])
    attention = torch.tensor([[[[0.5, 0.0]]]])
    expected = torch.tensor([[[[1.5, 2.0]], [[-4.5, 4.0]]]])
    torch.testing.assert_close(apply_attention(features, attention), expected)


def test_apply_attention_resizes_the_map_bilinearly():
    features = torch.ones(1, 3, 4, 4)
    out = apply_attention(features, torch.full((1, 1, 2, 2), 0.25))
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 1.25))


def test_one_plus_m_never_erases_a_feature_that_m_times_f_would():
    features = torch.randn(2, 8, 4, 4)
    attention = torch.zeros(2, 1, 4, 4)
    assert torch.equal(apply_attention(features, attention), features)


def point_for(variant):
    return 2 if variant in ATTENTION_VARIANTS else None


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_forward_and_backward_at_64px(variant):
    torch.manual_seed(0)
    model = make_model(variant, adn="resnet18", attention_point=point_for(variant), image_size=64)
    rgb, anomaly_map = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64)
    adn_logit, caan_logit = model(rgb, anomaly_map)
    assert adn_logit.shape == (2,)
    assert (caan_logit is not None) == variant.startswith("caan_")
    loss = adn_logit.sum() + (0 if caan_logit is None else caan_logit.sum())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", ["baseline", "4ch_input", "direct_attention", "caan_mobilenet", "caan_resnet"])
def test_variants_run_forward_and_backward_at_256px(variant):
    model = make_model(variant, adn="cnn", attention_point=point_for(variant), image_size=256)
    adn_logit, _ = model(torch.rand(1, 3, 256, 256), torch.rand(1, 1, 256, 256))
    adn_logit.sum().backward()


@pytest.mark.parametrize("attention_point", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_attention_lands_at_the_chosen_point(variant, attention_point):
    model = make_model(variant, adn="cnn", attention_point=attention_point, image_size=64).eval()
    _, _, features = model(torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64), return_features=True)
    after = features["points"][attention_point - 1]
    size = 64 // 2**attention_point
    assert features["attention"].shape == (2, 1, size, size)
    torch.testing.assert_close(after, (1 + features["attention"]) * features["before"])


def test_the_caan_learns_through_the_attention():
    model = make_model("caan_resnet", adn="cnn", attention_point=3, image_size=64)
    adn_logit, _ = model(torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64))
    adn_logit.sum().backward()  # the ADN's loss alone
    assert model.caan.blocks[0][0].weight.grad.abs().sum() > 0


def test_direct_attention_is_the_sigmoid_of_the_averaged_map():
    model = make_model("direct_attention", adn="cnn", attention_point=1, image_size=64)
    anomaly_map = torch.zeros(1, 1, 64, 64)
    anomaly_map[..., :32, :] = 2.0
    _, _, features = model(torch.rand(1, 3, 64, 64), anomaly_map, return_features=True)
    expected = torch.sigmoid(torch.nn.functional.avg_pool2d(anomaly_map, 2))
    torch.testing.assert_close(features["attention"], expected)


def test_attentioned_input_feeds_rgb_times_one_plus_sigmoid_map():
    model = make_model("attentioned_input", adn="cnn", image_size=32)
    rgb, anomaly_map = torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(model.declaration.adn_input(rgb, anomaly_map), rgb * (1 + torch.sigmoid(anomaly_map)))


def test_models_without_attention_report_none():
    model = make_model("baseline", adn="cnn", image_size=32)
    _, caan_logit, features = model(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32), return_features=True)
    assert caan_logit is None and features["before"] is None and features["attention"] is None
    assert len(features["points"]) == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="caan_resnet", attention_point=0), "attention_point in 1..5"),
        (dict(variant="caan_resnet", attention_point=6), "attention_point in 1..5"),
        (dict(variant="direct_attention"), "attention_point in 1..5"),
        (dict(variant="baseline", attention_point=2), "has no attention point"),
        (dict(variant="lea"), "unknown variant"),
        (dict(variant="baseline", adn="resnet34"), "unknown ADN"),
        (dict(variant="baseline", image_size=16), "multiple of 32"),
        (dict(variant="baseline", image_size=100), "multiple of 32"),
    ],
)
def test_make_model_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_model(**{"adn": "cnn", "image_size": 64, **kwargs})


@pytest.mark.parametrize(
    "rgb_shape, map_shape, message",
    [
        ((2, 1, 64, 64), (2, 1, 64, 64), r"rgb must be shaped \(N, 3, 64, 64\)"),
        ((2, 3, 32, 32), (2, 1, 32, 32), r"rgb must be shaped \(N, 3, 64, 64\)"),
        ((2, 3, 64, 64), (2, 3, 64, 64), r"anomaly_map must be shaped \(N, 1, H, W\)"),
        ((2, 3, 64, 64), (2, 1, 32, 32), "must match the images"),
        ((2, 3, 64, 64), (1, 1, 64, 64), "must match the images"),
        ((3, 64, 64), (1, 64, 64), "rgb must be shaped"),
    ],
)
def test_forward_names_bad_inputs(rgb_shape, map_shape, message):
    model = make_model("caan_mobilenet", adn="cnn", attention_point=1, image_size=64)
    with pytest.raises(ValueError, match=message):
        model(torch.rand(rgb_shape), torch.rand(map_shape))


def test_attention_functions_name_bad_shapes():
    with pytest.raises(ValueError, match="features must be shaped"):
        attention_map(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"attention \(N, 1"):
        apply_attention(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4))


def test_a_variant_is_one_declaration(monkeypatch, capsys):
    def grey_image(rgb, anomaly_map):
        return rgb.mean(dim=1, keepdim=True)  # (N, 1, S, S)

    monkeypatch.setitem(VARIANTS, "grey_input", Variant("{adn} (grey input)", grey_image, input_channels=1))
    model = make_model("grey_input", adn="cnn", image_size=32)
    adn_logit, caan_logit = model(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    assert adn_logit.shape == (2,) and caan_logit is None
    assert CrossValidation("grey_input", "cnn", None, 0, folds=[]).label == "CNN (grey input)"
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "grey_input" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["demo", "--variants", "baseline,grey_input"]).variants == \
        ["baseline", "grey_input"]
