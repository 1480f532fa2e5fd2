"""LEA-Net's relatives (CAVGA, AGPNet, ATAC-Net) and the one interface they share (``lea_tiny.detector``)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage import io

from lea_tiny import agpnet, atacnet, cavga, detector, relatives
from lea_tiny.compare import CrossValidation, paired_difference
from lea_tiny.data import load_folder, make_dataset

SIZE = 32
# (module, options): every method, and each key ablation's other side.
METHODS = {
    "cavga": (cavga.train, {}),
    "cavga weakly supervised": (cavga.train, dict(weakly_supervised=True)),
    "agpnet": (agpnet.train, {}),
    "agpnet colour": (agpnet.train, dict(noise="colour", colorizer_epochs=1)),
    "atacnet": (atacnet.train, {}),
    "lea-net": (detector.train, dict(colorizer_epochs=1)),
    "baseline": (detector.train, dict(variant="baseline")),
}


@pytest.fixture(scope="module")
def tiny():
    return make_dataset("retina", n_normal=6, n_anomalous=3, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny):
    """The tiny data set written as a plain good/ + defect/ folder and read back by load_folder."""
    root = tmp_path_factory.mktemp("good_defect")
    for index, (image, label) in enumerate(zip(tiny.images, tiny.labels)):
        (root / ("defect" if label else "good")).mkdir(exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        io.imsave(root / ("defect" if label else "good") / f"{index}.png", pixels, check_contrast=False)
    return load_folder(root, image_size=SIZE)


# Shapes, on a folder read by load_folder ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_on_a_folder_and_scores_and_localizes_with_the_promised_shapes(name, folder):
    train, options = METHODS[name]
    found = train(folder.images, folder.labels, epochs=1, **options)
    assert isinstance(found, detector.Detector)
    scores, maps = found.score(folder.images), found.localize(folder.images)
    assert scores.shape == (len(folder),) and bool(torch.isfinite(scores).all())
    if name == "baseline":
        assert maps is None
    else:
        assert maps.shape == (len(folder), SIZE, SIZE) and bool(torch.isfinite(maps).all())


# The loss terms on hand-made cases -----------------------------------------------------------------------------------
def test_cavga_attention_losses_on_hand_made_attention():
    ones, zeros = torch.ones(2, 4, 4), torch.zeros(2, 4, 4)
    assert cavga.attention_expansion_loss(ones) == 0 and cavga.attention_expansion_loss(zeros) == 1
    every, none = torch.ones(2), torch.zeros(2)
    assert cavga.complementary_guided_attention_loss(ones, zeros, every) == 0  # all normal, nothing anomalous
    assert cavga.complementary_guided_attention_loss(zeros, ones, every) == 2  # the opposite
    assert cavga.complementary_guided_attention_loss(zeros, ones, none) == 0  # no image counts
    assert cavga.complementary_guided_attention_loss(torch.stack([ones[0], zeros[0]]), torch.stack([zeros[0], ones[0]]),
                                                     torch.tensor([1.0, 0.0])) == 0  # only the first counts
    assert torch.equal(cavga.kl_divergence(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)), torch.zeros(2))
    assert cavga.kl_divergence(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)).item() == pytest.approx(0.5)


def test_cavga_attention_switch_adds_exactly_the_weighted_expansion_loss(tiny):
    torch.manual_seed(0)
    model = cavga.CAVGA().eval()  # eval: z is the mean, so both calls see the same forward pass
    images, labels = tiny.normal_images[:4], torch.zeros(4, dtype=torch.long)
    losses = {switch: cavga.training_loss(model, images, labels, weakly_supervised=False, attention_loss=switch,
                                  kl_weight=0.01, attention_weight=0.01) for switch in (True, False)}
    _, _, _, z, features, _ = model(images)
    expansion = cavga.attention_expansion_loss(model.attention(z.flatten(1).sum(1), features, images.shape[-2:]))
    assert (losses[True] - losses[False]).item() == pytest.approx(0.01 * expansion.item(), rel=1e-4)
    assert expansion > 0


def test_grad_cam_of_a_linear_score_weights_each_channel_by_its_mean_gradient():
    features = torch.rand(2, 3, 4, 4, requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 0.5])
    output = (features * weights[:, None, None]).sum(dim=(1, 2, 3))
    expected = (features * weights[:, None, None]).sum(dim=1)  # alpha_k = w_k at every position
    assert torch.allclose(detector.grad_cam(output, features), expected)


def test_agpnet_noise_masks_discrepancy_and_perturbation_on_hand_made_features():
    features = torch.randn(2, 8, 4, 4)
    attention = agpnet.noise_mask(features, "attention")
    uniform = agpnet.noise_mask(features, "uniform")
    assert torch.allclose(uniform.mean(dim=(2, 3)), attention.mean(dim=(2, 3)))  # the same noise, spread evenly
    assert bool((uniform == uniform[:, :, :1, :1]).all()) and not torch.allclose(attention, uniform)
    colour = agpnet.noise_mask(features, "colour", torch.ones(2, 1, 16, 16))
    assert colour.shape == (2, 1, 4, 4) and bool((colour == 1).all())
    assert torch.allclose(agpnet.cosine_discrepancy(features, features), torch.zeros(2, 4, 4), atol=1e-6)
    assert torch.allclose(agpnet.cosine_discrepancy(-features, features), torch.full((2, 4, 4), 2.0))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(agpnet.perturb(features, attention, 0.0, generator), features)
    assert torch.equal(agpnet.perturb(features, torch.zeros_like(attention), 3.0, generator), features)


def test_atacnet_deviation_loss_and_crop_on_hand_made_cases():
    normal, anomalous = torch.tensor([0]), torch.tensor([1])
    assert atacnet.deviation_loss(torch.tensor([0.0]), normal) == 0
    assert atacnet.deviation_loss(torch.tensor([-2.0]), normal) == 2
    assert atacnet.deviation_loss(torch.tensor([6.0]), anomalous) == 0  # beyond the margin: no loss
    assert atacnet.deviation_loss(torch.tensor([1.0]), anomalous) == 4
    images = torch.rand(2, 3, 8, 8)
    attention = torch.zeros(2, 8, 8)
    attention[0, 2:4, 4:8] = 1.0  # image 0: a hot box; image 1: no attention at all
    crops = atacnet.attention_crop(images, attention)
    assert crops.shape == images.shape
    assert torch.allclose(crops[0], torch.nn.functional.interpolate(images[:1, :, 2:4, 4:8], size=(8, 8),
                                                                   mode="bilinear", align_corners=False)[0])
    assert torch.equal(crops[1], images[1])


def test_pixel_auroc_is_one_for_the_mask_itself_and_refuses_masks_of_one_class():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, :2] = True
    assert detector.pixel_auroc(masks.float(), masks) == 1.0
    with pytest.raises(ValueError, match="both anomalous and normal pixels"):
        detector.pixel_auroc(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))


# The ablation switches switch, and seeds repeat ----------------------------------------------------------------------
@pytest.mark.parametrize("train, switch", [
    (cavga.train, dict(attention_loss=False)),
    (agpnet.train, dict(noise="uniform")),
    (atacnet.train, dict(zoom=False)),
])
def test_each_key_ablation_changes_what_is_learnt(train, switch, tiny):
    on = train(tiny.images, tiny.labels, epochs=2, seed=0)
    off = train(tiny.images, tiny.labels, epochs=2, seed=0, **switch)
    assert not torch.allclose(on.score(tiny.images), off.score(tiny.images))


@pytest.mark.parametrize("name", ["cavga", "agpnet", "atacnet"])
def test_same_seed_same_numbers_and_another_seed_others(name, tiny):
    train, options = METHODS[name]
    first, again = (train(tiny.images, tiny.labels, epochs=1, seed=0, **options).score(tiny.images) for _ in range(2))
    other = train(tiny.images, tiny.labels, epochs=1, seed=1, **options).score(tiny.images)
    assert torch.equal(first, again) and not torch.equal(first, other)


# Bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [cavga.train, agpnet.train, atacnet.train, detector.train])
def test_bad_training_input_gets_clear_errors(train, tiny):
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        train(tiny.images[:, :1], tiny.labels, epochs=1)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        train(tiny.images * 2, tiny.labels, epochs=1)
    with pytest.raises(ValueError, match="one per image"):
        train(tiny.images, tiny.labels[:-1], epochs=1)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        train(tiny.images, tiny.labels, epochs=0)
    with pytest.raises(ValueError, match="normal"):
        train(tiny.anomalous_images, torch.ones(3, dtype=torch.long), epochs=1)


def test_method_options_and_scoring_sizes_are_checked(tiny):
    with pytest.raises(ValueError, match="noise must be one of"):
        agpnet.train(tiny.images, tiny.labels, epochs=1, noise="everywhere")
    with pytest.raises(ValueError, match="zoom must be True or False"):
        atacnet.train(tiny.images, tiny.labels, epochs=1, zoom=1)
    with pytest.raises(ValueError, match="both normal"):
        cavga.train(tiny.normal_images, torch.zeros(6, dtype=torch.long), epochs=1, weakly_supervised=True)
    with pytest.raises(ValueError, match="square images with a side that is a multiple of 32"):
        atacnet.train(tiny.images[..., :24, :24], tiny.labels, epochs=1)
    found = cavga.train(tiny.images, tiny.labels, epochs=1)
    with pytest.raises(ValueError, match="32x32 px like the training images"):
        found.score(torch.rand(2, 3, 16, 16))


# One table ----------------------------------------------------------------------------------------------------------
def test_cross_validate_method_gives_rows_that_pair_fold_by_fold(dataset, folds, tmp_path):
    rows = [detector.cross_validate_method(train, dataset, folds, name=name, epochs=1, **options)
            for name, (train, options) in (("agpnet", METHODS["agpnet"]), ("baseline", METHODS["baseline"]))]
    assert all(isinstance(row, CrossValidation) and len(row.folds) == len(folds) for row in rows)
    assert rows[0].label == "agpnet" and "pixel_auroc" in rows[0].folds[0] and "pixel_auroc" not in rows[1].folds[0]
    difference = paired_difference(rows[0], rows[1])
    assert difference.pairs == len(folds) and difference.low <= difference.mean <= difference.high
    assert rows[0].on("pixel_auroc").mean["auroc"] == pytest.approx(np.mean([f["pixel_auroc"] for f in rows[0].folds]))
    splits = detector.stratified_splits(dataset.labels, folds=2, seed=0)
    assert all(np.array_equal(split.train_index, fold.train_index) and np.array_equal(split.test_index, fold.test_index)
               for split, fold in zip(splits, folds))  # prepare_folds' splits, without its colourisers
    with pytest.raises(ValueError, match="no 'pixel_auroc'"):
        rows[1].on("pixel_auroc")
    detector.save_comparison(rows, tmp_path / "rows.json", dict(epochs=1))
    loaded, config = detector.load_comparison(tmp_path / "rows.json")
    assert config == dict(epochs=1) and loaded[0].folds == rows[0].folds and loaded[0].label == "agpnet"


# Saved as it goes, resumed where it stopped ----------------------------------------------------------------------
# Three quick rows: one without a map, two that localise (neither is LEA-Net).
QUICK = {"baseline (CNN)": METHODS["baseline"], "AGPNet": METHODS["agpnet"], "ATAC-Net": METHODS["atacnet"]}
RUN = dict(folds=2, epochs=1)


def _counted(methods, trained, interrupt_at=None):
    """``methods`` whose train functions record the name they train, and raise KeyboardInterrupt at ``interrupt_at``."""
    def counting(name, train):
        def counted(*args, **kwargs):
            if name == interrupt_at:
                raise KeyboardInterrupt
            trained.append(name)
            return train(*args, **kwargs)
        return counted

    return {name: (counting(name, train), options) for name, (train, options) in methods.items()}


def _timeless(rows):
    """The rows with every fold's training seconds set to 0: two runs differ in nothing else."""
    return [replace(row, folds=[dict(fold, seconds=0.0) for fold in row.folds]) for row in rows]


def test_an_interrupted_comparison_resumes_training_only_the_rest_and_ends_with_the_uninterrupted_table(tiny, tmp_path):
    uninterrupted = relatives.compare(tiny, QUICK, out_dir=tmp_path / "whole", **RUN)
    interrupted, trained = tmp_path / "interrupted", []
    with pytest.raises(KeyboardInterrupt):
        relatives.compare(tiny, _counted(QUICK, trained, interrupt_at="AGPNet"), out_dir=interrupted, **RUN)
    saved, _ = detector.load_comparison(interrupted / "results.json")
    assert trained == ["baseline (CNN)"] * 2 and [row.label for row in saved] == ["baseline (CNN)"]  # once a fold
    assert (interrupted / "results.md").read_text() == relatives.table(saved) + "\n"

    trained.clear()
    resumed = relatives.compare(tiny, _counted(QUICK, trained), out_dir=interrupted, resume=True, **RUN)
    assert trained == ["AGPNet"] * 2 + ["ATAC-Net"] * 2
    assert resumed[0].folds == saved[0].folds  # kept, not retrained
    assert relatives.table(_timeless(resumed)) == relatives.table(_timeless(uninterrupted))
    rows, config = detector.load_comparison(interrupted / "results.json")
    assert relatives.table(_timeless(rows)) == relatives.table(_timeless(uninterrupted))
    assert config["environment"]["resumed_a_run_started"] and config["methods"] == list(QUICK)


ONE = {"baseline (CNN)": METHODS["baseline"]}


@pytest.mark.parametrize("methods, change, named", [(ONE, dict(epochs=2), "epochs=1 there, 2 here"),
                                                    (QUICK, {}, "methods=")])
def test_resuming_a_comparison_with_another_configuration_is_refused_before_training(tiny, tmp_path, methods, change,
                                                                                      named):
    relatives.compare(tiny, ONE, out_dir=tmp_path, **RUN)
    trained = []
    with pytest.raises(ValueError, match=f"cannot resume the run in .*{named}"):
        relatives.compare(tiny, _counted(methods, trained), out_dir=tmp_path, resume=True, **(RUN | change))
    assert trained == []


def test_resuming_needs_an_out_dir(tiny):
    with pytest.raises(ValueError, match="resume=True needs the out_dir"):
        relatives.compare(tiny, ONE, resume=True, **RUN)


def test_pixel_auroc_is_compared_with_lea_net_else_the_first_method_that_localises(tiny):
    rows = relatives.compare(tiny, QUICK, **RUN)
    assert relatives.choose_pixel_reference(rows) == "AGPNet"  # the baseline, first, has no map
    made = relatives.table(rows)
    assert made.endswith("Reference: baseline (CNN). Pixel reference: AGPNet.")
    assert "| AGPNet |" in made and made.count("(reference)") == 2
    lea_net = replace(rows[2], variant=relatives.LEA_NET)
    assert relatives.choose_pixel_reference([*rows, lea_net]) == relatives.LEA_NET
    assert relatives.choose_pixel_reference(rows[:1]) is None
    assert relatives.table(rows[:1]).endswith("Pixel reference: none, since no row has a pixel AUROC (no map, or no "
                                              "masks).")
    with pytest.raises(ValueError, match="'baseline \\(CNN\\)' has no pixel AUROC"):
        relatives.table(rows, pixel_reference=relatives.BASELINE)
