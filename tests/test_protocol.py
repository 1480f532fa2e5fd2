"""The protocol (lea_tiny.protocol): one checked object for every setting, the paper's and the teaching one."""

import pytest

import lea_tiny.__main__ as cli
from lea_tiny.attention import ATTENTION_POINTS, VARIANTS
from lea_tiny.protocol import PAPER, PAPER_DATA, TEACHING, TEACHING_DATA, Protocol


def test_the_paper_protocol_is_section_4_2():
    assert (PAPER.adn, PAPER.variants, PAPER.attention_points) == ("resnet18", tuple(VARIANTS), ATTENTION_POINTS)
    assert (PAPER.folds, PAPER.repeats, PAPER.epochs, PAPER.batch_size, PAPER.colorizer_epochs) == (5, 1, 100, 16, 500)
    assert PAPER.augment is False and PAPER.learning_rate == 1e-4
    assert PAPER.replace(adn="vgg16").learning_rate == 1e-5
    assert PAPER_DATA == dict(n_normal=337, n_anomalous=98, image_size=256)  # Table 2, Retina


def test_replace_changes_only_what_it_names_and_checks_the_result():
    changed = TEACHING.replace(repeats=3)
    assert changed.repeats == 3 and TEACHING.repeats == 1
    assert changed.replace(repeats=1) == TEACHING
    with pytest.raises(ValueError, match=r"unknown protocol setting\(s\) \['epoch'\]"):
        TEACHING.replace(epoch=3)


@pytest.mark.parametrize("setting, message", [
    (dict(adn="resnet"), "unknown ADN 'resnet'"),
    (dict(variants="baseline"), "got the string 'baseline'"),
    (dict(variants=("baseline", "lea")), r"unknown variant\(s\) \['lea'\]"),
    (dict(variants=()), "variants is empty"),
    (dict(attention_points=()), "attention_points is empty"),
    (dict(attention_points=(1, 6)), "every attention point must be an int in 1..5, got 6"),
    (dict(attention_points=(True,)), "every attention point must be an int in 1..5, got True"),
    (dict(attention_points=(2, 2)), r"attention_points \[2, 2\] repeats a point"),
    (dict(folds=1), "folds must be an int >= 2"),
    (dict(epochs=2.0), "epochs must be an int >= 1"),
    (dict(batch_size=True), "batch_size must be an int >= 2"),
    (dict(lr=0), "lr .* must be a finite number > 0"),
    (dict(lr=float("inf")), "lr .* must be a finite number > 0"),
    (dict(augment=1), "augment must be True or False"),
    (dict(choose_points="yes"), "choose_points must be True or False"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(seed=2**32 - 1), "seed must be an int >= 0 and <= "),
])
def test_a_bad_setting_is_refused_when_the_protocol_is_made(setting, message):
    with pytest.raises(ValueError, match=message):
        Protocol(**setting)


def test_points_are_chosen_on_validation_when_more_than_one_is_tried():
    assert PAPER.chooses_points and not TEACHING.chooses_points
    assert TEACHING.replace(choose_points=True).chooses_points
    config = TEACHING.as_config()
    assert config["lr"] == 3e-4 and config["choose_points"] is False and config["variants"] == list(TEACHING.variants)


@pytest.mark.parametrize("command, protocol, data", [("demo", TEACHING, TEACHING_DATA), ("ablation", PAPER, PAPER_DATA)])
def test_the_cli_defaults_are_the_protocols(command, protocol, data):
    args = cli.build_parser().parse_args([command])
    assert (args.epochs, args.folds, args.batch_size, args.augment, args.adn) == \
        (protocol.epochs, protocol.folds, protocol.batch_size, protocol.augment, protocol.adn)
    assert tuple(args.variants) == protocol.variants and tuple(args.attention_points) == protocol.attention_points
    assert args.image_size == data["image_size"]
