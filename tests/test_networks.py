"""The CAAN and ADN architectures: sizes at the five attention points, and Table 3's parameter counts."""

import math

import pytest
import torch

import lea_tiny.__main__ as cli
from lea_tiny.adn import ADN, ADN_NAMES, basic_cnn, make_adn
from lea_tiny.attention import make_model
from lea_tiny.caan import CAAN_NAMES, SqueezeExcite, make_caan
from lea_tiny.compare import CrossValidation
from lea_tiny.train import default_lr


def millions(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


# Table 3 of the paper (ResNet-based CAAN: 16.1M - 11.2M), basic CNN from Table 7.
PAPER_PARAMETERS = {"resnet18": 11.2, "resnet50": 23.6, "vgg16": 165.7, "vgg19": 171.0, "cnn": 4.0}


@pytest.mark.parametrize("name", ADN_NAMES)
def test_adn_parameter_counts_match_table_3_within_one_percent(name):
    with torch.device("meta"):  # counts parameters without allocating VGG's 165M
        model = make_adn(name, image_size=256)
    assert millions(model) == pytest.approx(PAPER_PARAMETERS[name], rel=0.01)


def test_resnet_caan_adds_table_3s_4_9m():
    with torch.device("meta"):
        assert millions(make_caan("resnet")) == pytest.approx(16.1 - 11.2, rel=0.01)


def test_mobilenet_caan_is_mobilenet_v3_small_sized():
    with torch.device("meta"):
        assert millions(make_caan("mobilenet")) == pytest.approx(1.67, abs=0.01)


def test_mobilenet_caan_default_keeps_mobilenet_v3s_squeeze_excite():
    with torch.device("meta"):
        caan = make_caan("mobilenet")
    assert sum(p.numel() for p in caan.parameters()) == 1_666_561
    assert all(se.gate[1].out_channels < se.gate[1].in_channels for se in caan.modules() if isinstance(se, SqueezeExcite))


def test_dense_squeeze_excite_builds_the_released_codes_table_1_count():
    # Keras reports the released MobileNet CAAN as 3,029,762 trainable parameters and 3,041,906 in all
    # (Table 1's 3.042M), the difference being BatchNorm's moving mean and variance. torch counts the
    # trainable ones as parameters and keeps the moving statistics as buffers (running_mean, running_var).
    with torch.device("meta"):
        caan = make_caan("mobilenet", squeeze_excite="dense")
    parameters = sum(p.numel() for p in caan.parameters())
    moving_statistics = sum(b.numel() for name, b in caan.named_buffers() if name.endswith(("running_mean", "running_var")))
    gates = [se.gate for se in caan.modules() if isinstance(se, SqueezeExcite)]
    assert all(gate[1].in_channels == gate[1].out_channels == gate[3].out_channels for gate in gates)
    assert sum(p.numel() for gate in gates for p in gate.parameters()) == 1_817_200
    assert parameters == 3_022_121

    # What the released Keras model has besides: a bias on every convolution that BatchNorm follows,
    # a 1x1 expansion 16 -> 16 (with bias and a BatchNorm of 16 channels) in the first bottleneck, and
    # a 2-way output where we have one logit.
    conv_biases = sum(conv.out_channels for conv in caan.modules() if isinstance(conv, torch.nn.Conv2d) and conv.bias is None)
    first_expansion, first_expansion_moving_statistics = 16 * 16 + 16 + 2 * 16, 2 * 16
    second_output = 1280 + 1
    assert parameters + conv_biases + first_expansion + second_output == 3_029_762
    assert (parameters + moving_statistics + conv_biases + first_expansion + first_expansion_moving_statistics
            + second_output) == 3_041_906


def test_squeeze_excite_option_names_the_problem():
    with pytest.raises(ValueError, match="unknown squeeze_excite"):
        make_caan("mobilenet", squeeze_excite="paper")
    with pytest.raises(ValueError, match="ResNet CAAN has no squeeze-excite"):
        make_caan("resnet", squeeze_excite="dense")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16", "cnn"])
def test_adn_points_halve_the_image_five_times(name):
    model = make_adn(name, image_size=64).eval()
    logit, points = model(torch.rand(2, 3, 64, 64))
    assert logit.shape == (2,)
    assert [p.shape[-1] for p in points] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize("name", CAAN_NAMES)
def test_caan_points_match_the_adn_point_for_point(name):
    caan_logit, caan_points = make_caan(name, image_size=64).eval()(torch.rand(2, 1, 64, 64))
    _, adn_points = make_adn("resnet18", image_size=64).eval()(torch.rand(2, 3, 64, 64))
    assert caan_logit.shape == (2,)
    assert [p.shape[-2:] for p in caan_points] == [p.shape[-2:] for p in adn_points]


@pytest.mark.parametrize("kind, name", [("adn", name) for name in ADN_NAMES] + [("caan", name) for name in CAAN_NAMES])
def test_untrained_networks_start_near_the_uninformed_loss(kind, name):
    # A fresh classifier should say "don't know": logits near 0 and BCE near ln 2. An initialisation
    # meant for hidden convolutions on the last layer gave the MobileNet CAAN logits of about +-6.
    torch.manual_seed(0)
    channels = 3 if kind == "adn" else 1
    net = make_adn(name, channels, 64) if kind == "adn" else make_caan(name, 64)
    with torch.no_grad():
        logits, _ = net.train()(torch.rand(16, channels, 64, 64))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.arange(16) % 2 * 1.0)
    assert logits.abs().max() < 2
    assert abs(loss.item() - math.log(2)) < 0.2


def test_adn_takes_any_channel_count():
    logit, _ = make_adn("cnn", in_channels=4, image_size=32)(torch.rand(2, 4, 32, 32))
    assert logit.shape == (2,)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: make_adn("alexnet"), "unknown ADN"),
        (lambda: make_adn("cnn", in_channels=0), "in_channels"),
        (lambda: make_adn("cnn", image_size=48), "multiple of 32"),
        (lambda: make_caan("vit"), "unknown CAAN"),
        (lambda: make_caan("resnet", image_size=8), "multiple of 32"),
    ],
)
def test_builders_name_the_problem(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_an_adn_is_one_declaration(monkeypatch):
    monkeypatch.setitem(ADN_NAMES, "tiny_cnn", ADN("Tiny CNN", lambda in_channels, size: basic_cnn(in_channels), 3e-3))
    model = make_model("direct_attention", adn="tiny_cnn", attention_point=2, image_size=32)
    assert model(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))[0].shape == (2,)
    assert default_lr("tiny_cnn") == 3e-3
    assert CrossValidation("baseline", "tiny_cnn", None, 0, folds=[]).label == "Tiny CNN"
    assert cli.build_parser().parse_args(["demo", "--adn", "tiny_cnn"]).adn == "tiny_cnn"
