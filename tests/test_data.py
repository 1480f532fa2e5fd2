"""The data sets (lea_tiny.data): the embedded ones, the container, and reading folders from disk."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color, io

import lea_tiny.__main__ as cli
from lea_tiny.data import AnomalyDataset, load_folder, make_dataset
from lea_tiny.embedded import EMBEDDED_DATASETS, EmbeddedDataset, draw_image

NAMES = ("retina", "leaves")


# make_dataset ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [32, 48])
def test_embedded_data_has_the_promised_shapes_types_ranges_and_counts(name, size):
    ds = make_dataset(name, n_normal=6, n_anomalous=3, image_size=size, seed=1)
    assert ds.name == name and len(ds) == 9 and ds.image_size == size
    assert ds.images.shape == (9, 3, size, size) and ds.images.dtype == torch.float32
    assert 0 <= ds.images.min() and ds.images.max() <= 1
    assert ds.labels.dtype == torch.int64 and ds.counts == dict(normal=6, anomalous=3)
    assert ds.masks.shape == (9, size, size) and ds.masks.dtype == torch.bool
    assert not ds.masks[ds.labels == 0].any()
    assert ds.masks[ds.labels == 1].flatten(1).any(1).all()  # every anomalous image has anomalous pixels
    assert [kind == "good" for kind in ds.defect_types] == (ds.labels == 0).tolist()
    assert len(ds.sources) == 9


@pytest.mark.parametrize("name", NAMES)
def test_embedded_data_repeats_for_a_seed_and_changes_with_it(name):
    first, again = (make_dataset(name, 4, 4, image_size=32, seed=3) for _ in range(2))
    other = make_dataset(name, 4, 4, image_size=32, seed=4)
    for field in ("images", "labels", "masks"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert not torch.equal(first.images, other.images)


def test_classes_are_interleaved_by_the_shuffle():
    labels = make_dataset("leaves", 12, 4, image_size=16).labels
    assert labels.sum() == 4 and not torch.equal(labels, labels.sort().values)


@pytest.mark.parametrize("name", NAMES)
def test_a_seed_draws_the_same_scenes_at_every_image_size(name):
    small = make_dataset(name, 3, 3, image_size=32, seed=2)
    large = make_dataset(name, 3, 3, image_size=64, seed=2)
    assert torch.equal(small.labels, large.labels) and small.defect_types == large.defect_types
    shrunk = F.interpolate(large.images, size=(32, 32), mode="area")
    other = make_dataset(name, 3, 3, image_size=32, seed=5).images
    same_scene, other_scene = (shrunk - small.images).abs().mean(), (other - small.images).abs().mean()
    assert same_scene < 0.03 and same_scene < other_scene / 3


@pytest.mark.parametrize("name", NAMES)
def test_difficulty_shrinks_and_fades_the_lesions_and_nothing_else(name):
    by_difficulty = {d: make_dataset(name, 3, 8, image_size=48, seed=0, difficulty=d) for d in (0.0, 0.5, 1.0)}
    normal = [ds.images[ds.labels == 0] for ds in by_difficulty.values()]
    assert torch.equal(normal[0], normal[1]) and torch.equal(normal[0], normal[2])
    areas = [ds.masks.float().mean().item() for ds in by_difficulty.values()]
    assert areas[0] > 2 * areas[1] and areas[1] > areas[2] > 0  # lesions never shrink below a pixel

    # Contrast: the colour change inside the lesions, measured against the same image without them.
    anomalous_index = 0  # the first anomalous image drawn: generator (seed, label 1, index 0)
    clean = draw_image(name, np.random.default_rng((0, 1, anomalous_index)), 48, False, 0.0)[0]
    change = []
    for difficulty in (0.0, 1.0):
        painted, mask, _, _ = draw_image(name, np.random.default_rng((0, 1, anomalous_index)), 48, True, difficulty)
        delta = np.linalg.norm(color.rgb2lab(painted)[..., 1:] - color.rgb2lab(clean)[..., 1:], axis=-1)
        change.append(delta[mask].mean())
    assert change[0] > 2 * change[1] > 0


def test_retina_patches_lie_inside_the_fundus():
    images = make_dataset("retina", 40, 0, image_size=32, seed=0).images
    assert images.mean(1).min() > 0.15  # the photograph's black surround never shows


def test_lesions_change_colour_more_than_lightness():
    """The retina's lesions are colour anomalies: a*b* moves further than L* from the clean image."""
    rng_args = (0, 1, 0)
    clean = color.rgb2lab(draw_image("retina", np.random.default_rng(rng_args), 64, False, 0.0)[0])
    painted, mask, _, _ = draw_image("retina", np.random.default_rng(rng_args), 64, True, 0.0)
    delta = np.abs(color.rgb2lab(painted) - clean)[mask]
    assert np.linalg.norm(delta[:, 1:], axis=1).mean() > delta[:, 0].mean()


def test_zero_images_of_one_class_is_allowed():
    ds = make_dataset("retina", 3, 0, image_size=16)
    assert ds.counts == dict(normal=3, anomalous=0) and not ds.masks.any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="mnist"), "unknown data set 'mnist'"),
    (dict(n_normal=-1), "n_normal must be an int >= 0"),
    (dict(n_anomalous=2.5), "n_anomalous must be an int >= 0"),
    (dict(n_normal=0, n_anomalous=0), "at least 1"),
    (dict(image_size=8), "image_size must be an int >= 16"),
    (dict(image_size=True), "image_size must be an int"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(difficulty=1.5), "difficulty must be a finite number >= 0 and <= 1"),
    (dict(difficulty=-0.1), "difficulty must be a finite number >= 0 and <= 1"),
    (dict(difficulty="hard"), "difficulty must be a finite number >= 0 and <= 1"),
])
def test_make_dataset_rejects_bad_arguments(kwargs, message):
    arguments = dict(name="retina", n_normal=2, n_anomalous=1, image_size=16) | kwargs
    with pytest.raises(ValueError, match=message):
        make_dataset(**arguments)


# AnomalyDataset -------------------------------------------------------------------------------------
def _tiny(count=6):
    labels = torch.tensor([0, 1] * (count // 2))
    masks = torch.zeros(count, 4, 4, dtype=torch.bool)
    masks[labels == 1, 0, 0] = True
    return AnomalyDataset(images=torch.rand(count, 3, 4, 4), labels=labels, masks=masks, name="tiny",
                          defect_types=["good" if label == 0 else "cut" for label in labels.tolist()],
                          sources=[f"image {i}" for i in range(count)])


def test_subset_takes_ints_or_booleans_and_keeps_everything_aligned():
    ds = _tiny()
    for index in ([1, 2], np.array([1, 2]), torch.tensor([1, 2]), [False, True, True, False, False, False]):
        part = ds.subset(index)
        assert len(part) == 2 and torch.equal(part.images, ds.images[1:3])
        assert part.labels.tolist() == [1, 0] and part.masks[0, 0, 0] and not part.masks[1].any()
        assert part.defect_types == ["cut", "good"] and part.sources == ["image 1", "image 2"]
    assert len(ds.subset([])) == 0


def test_counts_class_views_and_summary():
    ds = _tiny()
    assert ds.counts == dict(normal=3, anomalous=3)
    assert torch.equal(ds.normal_images, ds.images[[0, 2, 4]])
    assert torch.equal(ds.anomalous_images, ds.images[[1, 3, 5]])
    text = ds.summary()
    assert text == repr(ds) == str(ds)
    assert all(part in text for part in ("'tiny'", "6 images", "4x4", "3 normal + 3 anomalous", "1.000", "with masks"))


@pytest.mark.parametrize("index, message", [
    ([6], "out of range"), ([0.5], "1-D list of ints"), ([[0, 1]], "1-D list of ints"), ([True, False], "shape"),
])
def test_subset_rejects_bad_indices(index, message):
    with pytest.raises(ValueError, match=message):
        _tiny().subset(index)


@pytest.mark.parametrize("change, message", [
    (dict(images=torch.rand(6, 1, 4, 4)), r"images must be a float32 tensor of shape \(N, 3, H, W\)"),
    (dict(images=torch.rand(6, 3, 4, 4).double()), "images must be a float32"),
    (dict(labels=torch.zeros(5, dtype=torch.int64)), r"labels must have shape \(6,\)"),
    (dict(labels=torch.full((6,), 2)), "labels must be 0"),
    (dict(masks=torch.zeros(6, 4, 5, dtype=torch.bool)), "masks must be None or a bool tensor"),
    (dict(masks=torch.ones(6, 4, 4, dtype=torch.bool)), "all False on normal images"),
    (dict(sources=["a"]), "sources must hold one entry per image"),
])
def test_anomaly_dataset_rejects_inconsistent_fields(change, message):
    ds = _tiny()
    fields = dict(images=ds.images, labels=ds.labels, masks=ds.masks, name="tiny",
                  defect_types=ds.defect_types, sources=ds.sources) | change
    with pytest.raises(ValueError, match=message):
        AnomalyDataset(**fields)


# load_folder ----------------------------------------------------------------------------------------
def _write(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, pixels, check_contrast=False)


def _rgb(value, shape=(20, 30)):
    """A uniform uint8 RGB image of colour ``value`` (3 ints)."""
    return np.broadcast_to(np.array(value, np.uint8), (*shape, 3)).copy()


def test_plain_layout_good_plus_defect_folders(tmp_path):
    for i in range(3):
        _write(tmp_path / "good" / f"{i}.png", _rgb((200, 100, 50)))
    _write(tmp_path / "scratch" / "a.png", _rgb((0, 255, 0)))
    _write(tmp_path / "stain" / "b.jpg", _rgb((0, 0, 255), shape=(40, 40)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty_defect").mkdir()
    ds = load_folder(tmp_path, image_size=16)
    assert ds.name == tmp_path.name and ds.images.shape == (5, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.masks is None
    assert ds.defect_types == ["good"] * 3 + ["scratch", "stain"]
    assert ds.sources[3] == str(tmp_path / "scratch" / "a.png")
    # a uniform 20 x 30 image stays uniform after being stretched to 16 x 16
    torch.testing.assert_close(ds.images[0], torch.tensor([200, 100, 50]).div(255).view(3, 1, 1).expand(3, 16, 16))


def test_mvtec_layout_reads_train_and_test_and_the_masks(tmp_path):
    for i in range(2):
        _write(tmp_path / "train" / "good" / f"{i:03d}.png", _rgb((90, 60, 30)))
    _write(tmp_path / "test" / "good" / "000.png", _rgb((90, 60, 30)))
    for defect in ("color", "cut"):
        _write(tmp_path / "test" / defect / "000.png", _rgb((200, 30, 30)))
        mask = np.zeros((40, 40), np.uint8)
        mask[:, :20] = 255  # the left half is anomalous
        _write(tmp_path / "ground_truth" / defect / "000_mask.png", mask)
    ds = load_folder(tmp_path, image_size=16)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.defect_types == ["good"] * 3 + ["color", "cut"]
    assert ds.masks.shape == (5, 16, 16) and ds.masks.dtype == torch.bool
    assert not ds.masks[:3].any()
    assert ds.masks[3:, :, :8].all() and not ds.masks[3:, :, 8:].any()


def test_mvtec_without_mask_files_has_no_masks_and_warns_when_only_some_are_missing(tmp_path):
    _write(tmp_path / "train" / "good" / "000.png", _rgb((90, 60, 30)))
    _write(tmp_path / "test" / "cut" / "000.png", _rgb((200, 30, 30)))
    _write(tmp_path / "test" / "cut" / "001.png", _rgb((200, 30, 30)))
    assert load_folder(tmp_path, image_size=16).masks is None
    _write(tmp_path / "ground_truth" / "cut" / "000_mask.png", np.full((20, 30), 255, np.uint8))
    with pytest.warns(UserWarning, match=r"1 of 2 anomalous images .* no mask file .*001_mask.png"):
        assert load_folder(tmp_path, image_size=16).masks is None


def test_class_folders_with_normal_classes_like_plantvillage(tmp_path):
    for name, count in (("Potato___healthy", 2), ("Potato___Early_blight", 2), ("Potato___Late_blight", 1)):
        for i in range(count):
            _write(tmp_path / name / f"{i}.JPG", _rgb((40, 160, 40), shape=(24, 24)))
    ds = load_folder(tmp_path, image_size=16, normal_classes=["Potato___healthy"])
    assert ds.counts == dict(normal=2, anomalous=3) and ds.masks is None
    assert ds.defect_types == ["good", "good", "Potato___Early_blight", "Potato___Early_blight", "Potato___Late_blight"]


def test_rgba_and_grey_files_become_rgb_with_one_warning(tmp_path):
    _write(tmp_path / "good" / "rgb.png", _rgb((10, 20, 30)))
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent: composited on white
    _write(tmp_path / "good" / "rgba.png", rgba)
    _write(tmp_path / "cut" / "grey.png", np.full((20, 20), 128, np.uint8))
    message = r"converted 1 RGBA image\(s\) \(composited on white\) and 1 greyscale image\(s\) \(copied to 3"
    with pytest.warns(UserWarning, match=message) as caught:
        ds = load_folder(tmp_path, image_size=16)
    assert len(caught) == 1
    torch.testing.assert_close(ds.images[1], torch.ones(3, 16, 16))
    torch.testing.assert_close(ds.images[2], torch.full((3, 16, 16), 128 / 255))


def test_rgb_files_give_no_warning(tmp_path):
    _write(tmp_path / "good" / "a.png", _rgb((10, 20, 30)))
    _write(tmp_path / "cut" / "b.png", _rgb((30, 20, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_folder(tmp_path, image_size=16)


def test_load_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder: .*missing"):
        load_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_folder(tmp_path / "file.png")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image folders in .*empty .*no images found"):
        load_folder(empty)
    _write(empty / "loose.png", _rgb((1, 2, 3)))
    with pytest.raises(ValueError, match="its 1 images lie directly in it"):
        load_folder(empty)

    only_good = tmp_path / "only_good"
    _write(only_good / "good" / "a.png", _rgb((1, 2, 3)))
    with pytest.raises(ValueError, match="only normal images"):
        load_folder(only_good)
    (only_good / "cut").mkdir()  # a defect folder without images does not count
    with pytest.raises(ValueError, match="only normal images"):
        load_folder(only_good)

    no_good = tmp_path / "no_good"
    _write(no_good / "cut" / "a.png", _rgb((1, 2, 3)))
    _write(no_good / "healthy" / "a.png", _rgb((1, 2, 3)))
    with pytest.raises(ValueError, match=r"cannot tell which images .* normal_classes=\[...\] .*'cut', 'healthy'"):
        load_folder(no_good)
    with pytest.raises(ValueError, match=r"normal_classes \['Healthy'\] are not folders .*\['cut', 'healthy'\]"):
        load_folder(no_good, normal_classes=["Healthy"])
    with pytest.raises(ValueError, match="only normal images"):
        load_folder(no_good, normal_classes=["cut", "healthy"])
    for bad in ("healthy", [], [3]):
        with pytest.raises(ValueError, match="normal_classes must be a non-empty list of folder names"):
            load_folder(no_good, normal_classes=bad)
    with pytest.raises(ValueError, match="image_size must be an int >= 16"):
        load_folder(no_good, image_size=4, normal_classes=["healthy"])

    empty_good = tmp_path / "empty_good"
    (empty_good / "good").mkdir(parents=True)
    _write(empty_good / "cut" / "a.png", _rgb((1, 2, 3)))
    with pytest.raises(ValueError, match="only anomalous images"):
        load_folder(empty_good)


def test_an_unreadable_file_is_named(tmp_path):
    _write(tmp_path / "good" / "a.png", _rgb((1, 2, 3)))
    broken = tmp_path / "cut" / "x.png"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*cut.x\.png"):
        load_folder(tmp_path)


def test_an_embedded_data_set_is_one_declaration(monkeypatch, capsys):
    def plain_grey(rng, size):
        return np.full((size, size, 3), 0.5, np.float32), "grey", None

    def one_red_square(rng, size, size_scale, scene):
        shape = np.zeros((size, size), np.float32)
        shape[:size // 4, :size // 4] = 1
        return [(shape, 1.0, np.array((50.0, 70.0, 50.0)), 0.5)], "red_square"

    monkeypatch.setitem(EMBEDDED_DATASETS, "grey", EmbeddedDataset("nothing", plain_grey, one_red_square))
    grey = make_dataset("grey", n_normal=3, n_anomalous=2, image_size=16)
    assert grey.defect_types.count("red_square") == 2 and grey.masks.sum() == 2 * 4 * 4
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "'grey'" in capsys.readouterr().out
