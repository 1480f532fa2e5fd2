"""What comes in is checked up front (lea_tiny.checks): one parametrised test per class of bad input.

Every refusal is a ValueError (FileNotFoundError for a missing path) whose message names the argument
and what was wrong. Inputs are tiny (16-32 px, a handful of images), and nothing here trains: each
call is refused before its first step.
"""

import json
import re

import numpy as np
import pytest
import torch
from skimage import io
from sklearn.model_selection import StratifiedKFold

import lea_tiny
from lea_tiny.__main__ import build_parser, main
from lea_tiny.ablation import prepare_folds, run_ablation
from lea_tiny.attention import make_model
from lea_tiny.checks import SEED_MAX, fewest_to_split
from lea_tiny.ciede import ciede2000, lab_to_rgb, rgb_to_lab
from lea_tiny.colorize import UNet, anomaly_map, colorize, fancy_pca, train_colorizer
from lea_tiny.compare import load_results
from lea_tiny.data import AnomalyDataset, load_folder, make_dataset
from lea_tiny.maps import cross_fitted_maps, fewest_normals_to_cross_fit, fold_anomaly_maps, map_scale, scale_maps
from lea_tiny.train import evaluate, fit, save_checkpoint

SIZE = 32
NAN, INF = float("nan"), float("inf")


def _images(count=4, size=SIZE):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(count))


def _with(tensor, value):
    """A copy of ``tensor`` with its first element set to ``value`` (a NaN, an inf)."""
    tensor = tensor.clone()
    tensor.view(-1)[0] = value
    return tensor


def _model():
    return make_model("baseline", adn="cnn", image_size=SIZE)


def _fit(images=None, maps=None, **kwargs):
    images = _images() if images is None else images
    maps = torch.rand(len(images), 1, SIZE, SIZE) if maps is None else maps
    labels = torch.tensor([0, 1] * (len(images) // 2))
    return fit(_model(), images, maps, labels, **{"epochs": 1, "progress": False, **kwargs})


def _colorizer(**kwargs):
    return train_colorizer(_images(4, 16), **{"epochs": 1, "progress": False, **kwargs})


def _dataset(normal=12, anomalous=4, images=None):
    labels = torch.tensor([0] * normal + [1] * anomalous)
    return AnomalyDataset(_images(len(labels)) if images is None else images, labels, masks=None, name="tiny")


def _eval_model():
    return _model().eval()


LAB = rgb_to_lab(_images(1, 4)[0])


# NaN and inf ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: rgb_to_lab(_with(_images(1, 4), NAN)), "rgb must be finite"),
    (lambda: lab_to_rgb(_with(LAB, INF)), "lab must be finite"),
    (lambda: ciede2000(LAB, _with(LAB, NAN)), "lab2 must be finite"),
    (lambda: ciede2000(LAB, LAB, kL=INF), "kL must be a finite number > 0, got inf"),
    (lambda: AnomalyDataset(_with(_images(), NAN), torch.tensor([0, 1, 0, 1]), None, "x"), "images must be finite"),
    (lambda: AnomalyDataset(_images() * 255, torch.tensor([0, 1, 0, 1]), None, "x"),
     r"images must have values in \[0, 1\], got .* divided by 255"),
    (lambda: _fit(images=_with(_images(), NAN)), "images must be finite"),
    (lambda: _fit(maps=_with(torch.rand(4, 1, SIZE, SIZE), INF)), "anomaly_maps must be finite"),
    (lambda: _fit(lr=INF), "lr .*must be a finite number > 0, got inf"),
    (lambda: _fit(lr=NAN), "lr .*must be a finite number > 0, got nan"),
    (lambda: _colorizer(lr=INF), "lr must be a finite number > 0, got inf"),
    (lambda: _colorizer(val_fraction=NAN), "val_fraction must be a finite number"),
    (lambda: fancy_pca(_images(), alpha=INF), "alpha must be a finite number"),
    (lambda: _eval_model()(_with(_images(2), NAN), torch.rand(2, 1, SIZE, SIZE)), "rgb must be finite"),
    (lambda: _eval_model()(_images(2), torch.rand(2, 1, SIZE, SIZE) * 40),
     "anomaly_map must have values in .*scale_maps"),
    (lambda: map_scale(torch.rand(2, 8, 8), NAN), "percentile must be a finite number"),
    (lambda: scale_maps(torch.rand(2, 8, 8), INF), "scale .*must be a finite number"),
])
def test_nan_and_inf_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_meta_tensors_have_shapes_and_no_values_to_check():
    with torch.device("meta"):
        model = _model().eval()
        adn_logit, _ = model(torch.empty(2, 3, SIZE, SIZE), torch.empty(2, 1, SIZE, SIZE))
    assert adn_logit.shape == (2,) and adn_logit.is_meta


def test_a_colouriser_whose_loss_is_never_finite_is_an_error_naming_lr(monkeypatch):
    import lea_tiny.colorize as colorize_module

    chroma_loss = colorize_module.chroma_loss
    monkeypatch.setattr(colorize_module, "chroma_loss", lambda unet, lab: chroma_loss(unet, lab) * NAN)
    with pytest.raises(ValueError, match="loss was nan from the first epoch on: lr=0.001"):
        _colorizer(epochs=3)


# Types and dtypes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: _model()(np.zeros((2, 3, SIZE, SIZE), np.float32), torch.rand(2, 1, SIZE, SIZE)),
     "rgb must be a float32 tensor, got ndarray"),
    (lambda: _model()(_images(2).mul(255).to(torch.uint8), torch.rand(2, 1, SIZE, SIZE)),
     r"rgb must be a float32 tensor, got dtype torch.uint8; convert 8-bit images with .float\(\) / 255"),
    (lambda: _model()(_images(2).double(), torch.rand(2, 1, SIZE, SIZE)),
     "rgb must be a float32 tensor, got dtype torch.float64"),
    (lambda: _model()(_images(2), torch.rand(2, 1, SIZE, SIZE).double()), "anomaly_map must be a float32 tensor"),
    (lambda: _fit(images=_images().double()), "images must be a float32 tensor, got dtype torch.float64"),
    (lambda: anomaly_map(UNet(16).eval(), _images(2, 16).mul(255).to(torch.uint8)), "rgb must be a float32 tensor"),
    (lambda: AnomalyDataset(_images(), torch.tensor([0, 1, 0, 1], dtype=torch.int32), None, "x"),
     "labels must be an int64 tensor, got dtype torch.int32"),
    (lambda: AnomalyDataset(_images(), torch.tensor([0, 1, 0, 1]), torch.zeros(4, SIZE, SIZE, dtype=torch.uint8), "x"),
     "masks must be a bool tensor, got dtype torch.uint8"),
    (lambda: fold_anomaly_maps(_images(6, 16), torch.zeros(6), torch.arange(4), epochs=1),
     "labels must be integers .* got dtype torch.float32"),
])
def test_types_and_dtypes_are_named_as_such(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# Results are ordinary tensors, not inference tensors ------------------------------------------------------------
@pytest.mark.parametrize("result", [
    lambda: anomaly_map(UNet(16).eval(), _images(2, 16)),
    lambda: colorize(UNet(16).eval(), _images(2, 16)),
    lambda: evaluate(_model(), _images(), torch.rand(4, 1, SIZE, SIZE), torch.tensor([0, 1, 0, 1]))["scores"],
])
def test_results_can_be_changed_in_place_and_differentiated(result):
    maps = result()
    assert not maps.is_inference()
    maps /= 10
    weight = torch.ones((), requires_grad=True)
    (maps * weight).sum().backward()
    assert weight.grad is not None


# Booleans and floats are not ints, and a point is not tried twice -----------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: make_model("direct_attention", adn="cnn", attention_point=True, image_size=SIZE),
     "attention_point in 1..5, or a non-empty tuple of them, got True"),
    (lambda: make_model("caan_resnet", adn="cnn", attention_point=2.0, image_size=SIZE),
     "attention_point in 1..5, or a non-empty tuple of them, got 2.0"),
    (lambda: _fit(lr=True), "lr .*got True"),
    (lambda: _fit(epochs=True), "epochs must be an int >= 1, got True"),
    (lambda: _colorizer(lr=True), "lr must be a finite number > 0, got True"),
    (lambda: _colorizer(val_fraction=False), "val_fraction must be a finite number >= 0 and < 1, got False"),
    (lambda: map_scale(torch.rand(2, 8, 8), True), "percentile must be a finite number > 0 and <= 100, got True"),
    (lambda: run_ablation(_dataset(), adn="cnn", variants=["direct_attention"], attention_points=[1, 1], folds=2),
     r"attention_points \[1, 1\] repeats a point"),
    (lambda: run_ablation(_dataset(), adn="cnn", variants=["direct_attention"], attention_points=[True], folds=2),
     "every attention point must be an int in 1..5, got True"),
    (lambda: run_ablation(_dataset(), adn="cnn", variants=["direct_attention"], attention_points=[3.0], folds=2),
     "every attention point must be an int in 1..5, got 3.0"),
])
def test_booleans_and_floats_are_not_taken_as_ints(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_numpy_ints_are_ints():
    assert make_model("direct_attention", adn="cnn", attention_point=np.int64(2), image_size=SIZE).attention_point == 2


# Devices ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, message", [
    ("mps", "device must be 'cpu' or a CUDA device .* got 'mps'"),
    ("meta", "device must be 'cpu' or a CUDA device .* got 'meta'"),
    ("toaster", "device must be 'cpu' or a CUDA device .* got 'toaster'"),
    (True, "device must be 'cpu' or a CUDA device .* got True"),
    ("cuda:7", "device 'cuda:7' was asked for but "),
])
def test_only_the_cpu_and_present_cuda_devices_are_accepted(device, message):
    with pytest.raises(ValueError, match=message):
        lea_tiny.get_device(device)
    with pytest.raises(ValueError, match=message):
        _fit(device=device)


def test_the_cpu_is_a_device_by_name_or_as_a_torch_device():
    assert lea_tiny.get_device("cpu") == lea_tiny.get_device(torch.device("cpu")) == torch.device("cpu")


# Foreign results files ----------------------------------------------------------------------------------------------
def _record(**changes):
    fold = dict(repeat=0, fold=0, n_train=8, n_test=4, f1=0.5, auroc=0.75) | changes.pop("fold", {})
    row = dict(variant="baseline", adn="cnn", attention_point=None, params=10, folds=[fold]) | changes
    return dict(config={}, environment={}, results=[row])


@pytest.mark.parametrize("content, message", [
    (_record(variant="resnet_lea"), r"results\[0\] is no known \(variant, adn\) row, got \('resnet_lea', 'cnn'\)"),
    (_record(adn="alexnet"), r"results\[0\] is no known \(variant, adn\) row"),
    (_record(attention_point=2.0), r"results\[0\] has attention_point 2.0"),
    (_record(fold=dict(f1="high")), r"results\[0\], fold 0: f1 must be a finite number .* got 'high'"),
    (_record(fold=dict(auroc=None)), r"results\[0\], fold 0: auroc must be a finite number"),
    (_record(fold=dict(n_test=0)), r"results\[0\], fold 0: n_test must be an int >= 1"),
    (_record(folds=[]), r"results\[0\] needs a non-empty list of folds"),
    (_record(extra=1), "unexpected keyword argument 'extra'"),
    ([1, 2], "it needs a dict with 'config', 'environment' and a list of 'results'"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "can't decode byte"),
    (b"{not json", "Expecting property name"),
])
def test_a_foreign_results_file_is_a_value_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(ValueError, match=f"{path} is not a results.json written by lea_tiny: .*{message}"):
        load_results(tmp_path)


def test_a_well_formed_results_file_loads(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_record()))
    assert load_results(tmp_path).results[0].mean == dict(f1=0.5, auroc=0.75)
    with pytest.raises(FileNotFoundError, match="no saved results"):
        load_results(tmp_path / "elsewhere")


# Silent damage in load_folder ---------------------------------------------------------------------------------------
def _folder(tmp_path, odd_name, odd_pixels):
    """good/ with two plain images and cut/ with the odd one."""
    (tmp_path / "good").mkdir()
    (tmp_path / "cut").mkdir()
    for index in range(2):
        io.imsave(tmp_path / "good" / f"{index}.png", np.full((20, 20, 3), 120, np.uint8), check_contrast=False)
    io.imsave(tmp_path / "cut" / odd_name, odd_pixels, check_contrast=False)
    return tmp_path


@pytest.mark.parametrize("name, pixels, message", [
    ("tiny.png", np.full((1, 1, 3), 200, np.uint8), r"image file .*tiny.png is 1 x 1 px, smaller than 16 x 16"),
    ("thin.png", np.full((40, 15, 3), 200, np.uint8), r"image file .*thin.png is 15 x 40 px, smaller than 16 x 16"),
    ("bytes.tif", np.full((20, 20, 3), 200.0, np.float32), r"image file .*bytes.tif holds values in \[200, 200\]"),
    ("negative.tif", np.full((20, 20, 3), -0.5, np.float32), r"image file .*negative.tif holds values in \[-0.5"),
    ("nan.tif", np.full((20, 20, 3), np.nan, np.float32), r"image file .*nan.tif holds NaN or inf"),
])
def test_load_folder_refuses_what_it_would_damage(tmp_path, name, pixels, message):
    with pytest.raises(ValueError, match=message):
        load_folder(_folder(tmp_path, name, pixels), image_size=16)


def test_load_folder_reads_a_float_tiff_in_0_1_as_it_is(tmp_path):
    loaded = load_folder(_folder(tmp_path, "float.tif", np.full((16, 16, 3), 0.25, np.float32)), image_size=16)
    torch.testing.assert_close(loaded.images[-1], torch.full((3, 16, 16), 0.25))
    assert loaded.images.max() <= 1  # resizing can overshoot 1 by a rounding error; it is clipped


# Mismatched pieces ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    (dict(image_size=64), r"config\['image_size'\] is 64 but the model takes 32 px images"),
    (dict(image_size=32.0), r"config\['image_size'\] is 32.0 but the model takes 32 px images"),
    (dict(image_size="32"), r"config\['image_size'\] is '32'"),
])
def test_save_checkpoint_refuses_an_image_size_that_is_not_the_models(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tmp_path / "model.pt", _model(), config)
    assert not (tmp_path / "model.pt").exists()


# Seeds ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: lea_tiny.seed_everything(SEED_MAX + 1), r"seed must be an int >= 0 and <= 4294967295 .* got 4294967296"),
    (lambda: lea_tiny.seed_everything(-1), "seed must be an int >= 0"),
    (lambda: lea_tiny.seed_everything(True), "seed must be an int .* got True"),
    (lambda: _fit(seed=SEED_MAX + 1), "seed must be an int >= 0 and <= 4294967295"),
    (lambda: _colorizer(seed=2**40), "seed must be an int >= 0 and <= 4294967295"),
    (lambda: make_dataset("retina", 2, 1, image_size=16, seed=2**32), "seed must be an int >= 0 and <= 4294967295"),
    (lambda: cross_fitted_maps(_images(6, 16), 2, epochs=1, seed=SEED_MAX),
     r"seed must be an int >= 0 and <= 4294967293 .*seeds seed .. seed \+ 2 are used"),
    (lambda: fold_anomaly_maps(_images(6, 16), torch.zeros(6, dtype=torch.long), torch.arange(6), epochs=1,
                               cross_fit_parts=3, seed=SEED_MAX - 1), r"seed must be an int >= 0 and <= 4294967292"),
])
def test_seeds_outside_numpys_range_are_refused_up_front(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_largest_seed_is_a_seed():
    assert lea_tiny.seed_everything(SEED_MAX) == SEED_MAX
    assert build_parser().parse_args(["demo", "--seed", str(SEED_MAX)]).seed == SEED_MAX


# Too few normal images: say what the data set needs ---------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: prepare_folds(_dataset(5, 3), folds=3, colorizer_epochs=1, progress=False),
     "the dataset has 5 normal images; folds=3 with cross_fit_parts=2 needs at least 9"),
    (lambda: run_ablation(_dataset(11, 4), adn="cnn", variants=["baseline"], folds=2),
     "the dataset has 11 normal images; folds=2 with cross_fit_parts=2 needs at least 12"),
    (lambda: fold_anomaly_maps(_images(8, 16), torch.tensor([0] * 5 + [1] * 3), torch.arange(6), epochs=1),
     "cannot split the fold's 5 training normal images into cross_fit_parts=2 parts: at least 6 are needed"),
    (lambda: cross_fitted_maps(_images(4, 16), 3, epochs=1), "cannot split 4 normal images into k=3 parts: at least 5"),
    (lambda: cross_fitted_maps(_images(4, 16), 2, epochs=1), "cannot split 4 normal images into k=2 parts: at least 6"),
])
def test_too_few_normal_images_are_counted_against_what_is_needed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("parts, kept", [(parts, kept) for parts in (2, 3, 5) for kept in (1, 2, 3, 6, 7)])
def test_fewest_to_split_is_the_fewest_that_leave_enough_outside_every_part(parts, kept):
    def enough(count):
        parts_of_count = torch.tensor_split(torch.arange(count), parts)
        return count >= parts and all(count - len(part) >= kept for part in parts_of_count)

    fewest = fewest_to_split(parts, kept)
    assert enough(fewest) and not enough(fewest - 1)
    labels = np.array([0] * fewest + [1] * parts)  # the folds of the ablation: stratified k-fold
    for train, _ in StratifiedKFold(parts, shuffle=True, random_state=0).split(labels, labels):
        assert (labels[train] == 0).sum() >= kept


def test_the_colouriser_minimum_follows_val_fraction():
    assert fewest_normals_to_cross_fit(2) == 6  # each colouriser: 3 images, 2 to train on and 1 to validate on
    assert fewest_normals_to_cross_fit(2, val_fraction=0) == 4
    assert fewest_normals_to_cross_fit(3) == 5


# The command line: one line on stderr, exit code 2, before any training -------------------------------------------
def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize("argv, message", [
    (["demo", "--device", "mps"], "argument --device: device must be 'cpu' or a CUDA device"),
    (["ablation", "--device", "meta"], "argument --device: device must be 'cpu' or a CUDA device"),
    (["demo", "--seed", str(SEED_MAX + 1)], r"argument --seed: seed must be an int >= 0 and <= 4294967295"),
    (["demo", "--seed", "1e3"], "argument --seed: expected a non-negative integer"),
])
def test_the_cli_refuses_a_bad_device_or_seed_in_one_line(capsys, argv, message):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err)
