"""The colouriser and the colour anomaly map (lea_tiny.colorize), against numpy and skimage, and the maps
without leakage, their scale and the image score (lea_tiny.maps), with the colouriser as map source."""

import numpy as np
import pytest
import torch
from skimage import color
from torch import nn

import lea_tiny.colorize as colorize_module
from lea_tiny.colorize import UNet, anomaly_map, colorize, fancy_pca, train_colorizer
from lea_tiny.data import make_dataset
from lea_tiny.maps import cross_fitted_maps, fold_anomaly_maps, held_out_batch, image_score, map_scale, scale_maps


def _images(count, size, seed=0, low=0.0, high=1.0):
    """Smooth random colour images (blurred noise), like small photographs."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return low + (high - low) * smooth


def _lab(rgb):
    """skimage's L*a*b* of (N, 3, H, W) RGB, as (N, H, W, 3) float64."""
    return color.rgb2lab(rgb.permute(0, 2, 3, 1).double().numpy())


class FixedChroma(nn.Module):
    """A stand-in colouriser: returns the scaled a*b* it was given, after checking the L* it is fed."""

    def __init__(self, lab, chroma):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.lightness = torch.from_numpy(lab[..., 0] / 100).float().unsqueeze(1)
        self.chroma = torch.from_numpy((chroma + 128) / 255).float().permute(0, 3, 1, 2)

    def forward(self, lightness):
        torch.testing.assert_close(lightness, self.lightness, atol=1e-4, rtol=0)
        return self.chroma


# Fancy PCA -----------------------------------------------------------------------------------------
def test_fancy_pca_keeps_shape_and_range_and_alpha_zero_is_the_identity():
    rgb = _images(4, 16)
    out = fancy_pca(rgb, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, rgb)
    assert torch.equal(fancy_pca(rgb, alpha=0.0), rgb)


def test_fancy_pca_repeats_for_a_seeded_generator():
    rgb = _images(4, 16)
    first = fancy_pca(rgb, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, fancy_pca(rgb, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, fancy_pca(rgb, generator=torch.Generator().manual_seed(4)))


def test_fancy_pca_matches_a_numpy_reference_per_image():
    rgb = _images(3, 8, low=0.3, high=0.7)  # far from 0 and 1: nothing is clipped
    alpha = 0.5
    out = fancy_pca(rgb, alpha=alpha, generator=torch.Generator().manual_seed(1))
    draws = torch.randn(3, 3, generator=torch.Generator().manual_seed(1)).double().numpy()
    for image, result, draw in zip(rgb.double().numpy(), out.double().numpy(), draws):
        shift = (result - image).reshape(3, -1)
        np.testing.assert_allclose(shift, shift[:, :1].repeat(shift.shape[1], axis=1), atol=1e-5)  # one per image
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(image.reshape(3, -1)))
        # Along each principal component the shift is alpha * draw * eigenvalue (an eigenvector's sign is arbitrary).
        np.testing.assert_allclose(np.abs(eigenvectors.T @ shift[:, 0]), np.abs(alpha * draw * eigenvalues), atol=1e-5)


def test_fancy_pca_keeps_a_grey_image_grey():
    # A grey ramp varies only along (1, 1, 1): its one principal component is brightness.
    ramp = torch.linspace(0.3, 0.7, 64).reshape(1, 1, 8, 8).expand(1, 3, 8, 8)
    out = fancy_pca(ramp, alpha=20.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out, ramp, atol=1e-3)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("rgb, alpha, message", [
    (torch.rand(2, 1, 8, 8), 0.1, "shape"),
    (torch.rand(3, 8, 8), 0.1, "shape"),
    (torch.rand(2, 3, 8, 8) + 1, 0.1, r"\[0, 1\]"),
    (torch.zeros(0, 3, 8, 8), 0.1, "empty"),
    (torch.rand(2, 3, 8, 8), -0.1, "alpha"),
])
def test_fancy_pca_rejects_bad_input(rgb, alpha, message):
    with pytest.raises(ValueError, match=message):
        fancy_pca(rgb, alpha=alpha)


# U-Net (Table 9) --------------------------------------------------------------------------------------
def _table9_parameter_count(image_size):
    """Parameters of Table 9's U-Net, counted by hand from its layer list."""
    depth = int(np.log2(image_size))
    widths = [min(64 * 2**stage, 512) for stage in range(depth)]
    count = 4 * 4 * 1 * 64 + 64  # first conv: bias, no BatchNorm
    for previous, width in zip(widths, widths[1:]):
        count += 4 * 4 * previous * width + 2 * width  # conv without bias + BatchNorm scale and shift
    up_inputs = [widths[-1]] + [2 * width for width in reversed(widths[1:-1])]
    for in_channels, width in zip(up_inputs, reversed(widths[:-1])):
        count += 2 * 2 * in_channels * width + 2 * width
    return count + 2 * 2 * 2 * widths[0] * 2 + 2  # last transposed conv to a*b*, with bias


@pytest.mark.parametrize("image_size", [32, 64, 256])
def test_unet_maps_lightness_to_chroma_in_0_1(image_size):
    unet = UNet(image_size).eval()
    with torch.no_grad():
        out = unet(torch.rand(2, 1, image_size, image_size))
    assert out.shape == (2, 2, image_size, image_size)
    assert 0 < out.min() and out.max() < 1
    assert len(unet.encoder) == int(np.log2(image_size))  # down-samples to 1x1
    assert sum(p.numel() for p in unet.parameters()) == _table9_parameter_count(image_size)


def test_unet_at_256_px_is_table_9():
    unet = UNet(256)
    print(f"UNet(256): {sum(p.numel() for p in unet.parameters()):,} parameters")
    assert [stage[0].out_channels for stage in unet.encoder] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert [stage[0].out_channels for stage in unet.decoder] == [512, 512, 512, 512, 256, 128, 64]
    assert [stage[0].in_channels for stage in unet.decoder] == [512, 1024, 1024, 1024, 1024, 512, 256]
    assert [isinstance(stage[1], nn.BatchNorm2d) for stage in unet.encoder] == [False] + [True] * 7
    assert all(stage[-1].negative_slope == 0.2 for stage in unet.encoder)
    assert all(stage[0].kernel_size == (2, 2) and stage[0].stride == (2, 2) for stage in unet.decoder)
    assert unet.head.in_channels == 128 and unet.head.out_channels == 2
    sizes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for stage in unet.encoder]
    with torch.no_grad():
        unet.eval()(torch.rand(1, 1, 256, 256))
    assert sizes == [128, 64, 32, 16, 8, 4, 2, 1]
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("image_size", [8, 48, 100, 16.0, True])
def test_unet_rejects_a_size_that_is_not_a_power_of_two_from_16(image_size):
    with pytest.raises(ValueError, match="power of two"):
        UNet(image_size)


def test_unet_rejects_input_of_the_wrong_shape():
    with pytest.raises(ValueError, match="expects"):
        UNet(32)(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="expects"):
        UNet(32)(torch.rand(2, 3, 32, 32))


# Training --------------------------------------------------------------------------------------------
def test_train_colorizer_is_deterministic_for_a_seed_and_records_history():
    images = _images(16, 32)
    first = train_colorizer(images, epochs=2, batch_size=8, seed=0, progress=False)
    again = train_colorizer(images, epochs=2, batch_size=8, seed=0, progress=False)
    other = train_colorizer(images, epochs=2, batch_size=8, seed=1, progress=False)
    assert not first.training and isinstance(first, UNet)
    assert next(first.parameters()).device.type == "cpu"
    assert len(first.history["train_loss"]) == len(first.history["val_loss"]) == 2
    assert first.history["best_epoch"] == int(np.argmin(first.history["val_loss"]))
    assert first.history == again.history
    for (name, value), same in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, same), name
    assert first.history != other.history


def test_train_colorizer_stops_early_and_restores_the_best_weights():
    images = _images(8, 16, seed=2)
    stopped = train_colorizer(images, epochs=12, batch_size=4, lr=1e-2, patience=2, progress=False)
    history = stopped.history
    best = history["best_epoch"]
    assert best == int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == min(12, best + 1 + 2)  # stopped `patience` epochs after the best
    # The same run cut at the best epoch ends with exactly the restored weights.
    cut = train_colorizer(images, epochs=best + 1, batch_size=4, lr=1e-2, patience=100, progress=False)
    for (name, value), same in zip(stopped.state_dict().items(), cut.state_dict().values()):
        assert torch.equal(value, same), name


def test_train_colorizer_starts_from_the_mean_colour_of_its_images():
    images = _images(4, 16, seed=4)
    # A vanishing learning rate leaves the starting point in place: the mean a*b* everywhere.
    unet = train_colorizer(images, epochs=1, batch_size=4, lr=1e-12, val_fraction=0, progress=False)
    lab = _lab(images)
    with torch.no_grad():
        chroma = unet(torch.from_numpy(lab[..., 0] / 100).float().unsqueeze(1)) * 255 - 128
    expected = torch.from_numpy(lab[..., 1:].mean(axis=(0, 1, 2))).float().view(1, 2, 1, 1)
    torch.testing.assert_close(chroma, expected.expand_as(chroma), atol=1e-3, rtol=0)


def test_train_colorizer_without_validation_watches_the_training_loss():
    unet = train_colorizer(_images(4, 16), epochs=2, batch_size=4, val_fraction=0, progress=False)
    assert unet.history["val_loss"] == []
    assert unet.history["best_epoch"] == int(np.argmin(unet.history["train_loss"]))


@pytest.mark.parametrize("images, kwargs, message", [
    (torch.zeros(0, 3, 16, 16), {}, "empty"),
    (torch.rand(4, 1, 16, 16), {}, "shape"),
    (torch.rand(4, 16, 16, 3), {}, "shape"),
    (torch.rand(4, 3, 16, 16) * 2, {}, r"\[0, 1\]"),
    (torch.full((4, 3, 16, 16), float("nan")), {}, r"\[0, 1\]"),
    (torch.rand(4, 3, 16, 32), {}, "square"),
    (torch.rand(4, 3, 24, 24), {}, "power of two"),
    (torch.rand(2, 3, 16, 16), {}, "at least 2 training images"),
    (torch.rand(4, 3, 16, 16), dict(epochs=0), "epochs"),
    (torch.rand(4, 3, 16, 16), dict(batch_size=1), "batch_size"),
    (torch.rand(4, 3, 16, 16), dict(val_fraction=1.0), "val_fraction"),
    (torch.rand(4, 3, 16, 16), dict(lr=0), "lr"),
    (torch.rand(4, 3, 16, 16), dict(patience=0), "patience"),
])
def test_train_colorizer_rejects_bad_input(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_colorizer(images, **{"epochs": 1, "progress": False, **kwargs})


# Re-colouring and the map ------------------------------------------------------------------------------
def test_colorize_keeps_lightness_and_uses_the_predicted_chroma():
    rgb = _images(3, 16, low=0.3, high=0.7)
    lab = _lab(rgb)
    chroma = lab[..., 1:] * 0.5  # less saturated at the same L*: still inside the sRGB gamut
    recolored = colorize(FixedChroma(lab, chroma).eval(), rgb)
    assert recolored.shape == rgb.shape and recolored.dtype == torch.float32
    recolored_lab = _lab(recolored)
    np.testing.assert_allclose(recolored_lab[..., 0], lab[..., 0], atol=2e-3)
    np.testing.assert_allclose(recolored_lab[..., 1:], chroma, atol=2e-2)


def test_anomaly_map_is_zero_when_the_chroma_is_predicted_exactly():
    rgb = _images(3, 16)
    lab = _lab(rgb)
    maps = anomaly_map(FixedChroma(lab, lab[..., 1:]).eval(), rgb)
    assert maps.shape == (3, 16, 16)
    assert maps.abs().max() < 1e-3


def test_anomaly_map_is_ciede2000_on_true_lab_as_in_skimage():
    rgb = _images(3, 16, seed=5)
    lab = _lab(rgb)
    chroma = np.stack([-lab[..., 2], lab[..., 1] + 10], axis=-1)  # a wrong hue
    maps = anomaly_map(FixedChroma(lab, chroma).eval(), rgb)
    expected = color.deltaE_ciede2000(lab, np.concatenate([lab[..., :1], chroma], axis=-1))
    assert expected.mean() > 5
    np.testing.assert_allclose(maps.numpy(), expected, atol=5e-3)


def test_anomaly_map_does_not_depend_on_the_batch_size():
    unet = UNet(16).eval()
    rgb = _images(5, 16)
    torch.testing.assert_close(anomaly_map(unet, rgb, batch_size=2), anomaly_map(unet, rgb))
    torch.testing.assert_close(colorize(unet, rgb, batch_size=3), colorize(unet, rgb))


@pytest.mark.parametrize("function", [colorize, anomaly_map])
def test_recoloring_rejects_bad_input(function):
    unet = UNet(16)
    with pytest.raises(ValueError, match="training mode"):
        function(unet, _images(2, 16))
    unet.eval()
    with pytest.raises(ValueError, match="nn.Module"):
        function(lambda x: x, _images(2, 16))
    with pytest.raises(ValueError, match="shape"):
        function(unet, torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        function(unet, torch.rand(2, 3, 16, 16) - 1)
    with pytest.raises(ValueError, match="expects"):
        function(unet, _images(2, 32))
    with pytest.raises(ValueError, match="batch_size"):
        function(unet, _images(2, 16), batch_size=0)


# Maps without leakage ----------------------------------------------------------------------------------
class Recorder(nn.Module):
    """A stand-in colouriser that remembers which images it learnt from and which it mapped."""

    def __init__(self, learnt):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.learnt, self.mapped = learnt, []

    def forward(self, lightness):
        self.mapped += lightness.mean(dim=(1, 2, 3)).tolist()
        return torch.full((lightness.shape[0], 2, *lightness.shape[2:]), 128 / 255)


def _grey_images(count, size=16):
    """Image i is a flat grey of its own, so its L* names it."""
    levels = torch.linspace(0.1, 0.9, count)
    return levels.reshape(count, 1, 1, 1).expand(count, 3, size, size).clone()


def test_fold_anomaly_maps_never_maps_a_training_normal_with_a_colouriser_that_saw_it(monkeypatch):
    images = _grey_images(14)
    labels = torch.tensor([0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0])
    train_index = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # the test images are 10..13
    scaled_lightness = torch.from_numpy(_lab(images)[..., 0] / 100).float().mean(dim=(1, 2))

    def name(value):
        return int((scaled_lightness - value).abs().argmin())

    colourisers = []

    def fake_train_colorizer(normal_images, epochs, **kwargs):
        learnt = {name(level) for level in torch.from_numpy(_lab(normal_images)[..., 0] / 100).mean(dim=(1, 2))}
        colourisers.append(Recorder(learnt).eval())
        return colourisers[-1]

    monkeypatch.setattr(colorize_module, "train_colorizer", fake_train_colorizer)
    maps = fold_anomaly_maps(images, labels, train_index, epochs=1, cross_fit_parts=3)
    assert maps.shape == (14, 16, 16)

    train_normals = {0, 1, 3, 4, 6, 7, 8}
    assert len(colourisers) == 3 + 1  # one per cross-fitting part, one on all training normals
    mapped = [{name(value) for value in colouriser.mapped} for colouriser in colourisers]
    assert sorted(i for names in mapped for i in names) == list(range(14))  # each image mapped once
    for colouriser, names in zip(colourisers, mapped):
        assert colouriser.learnt <= train_normals  # only training normals are ever learnt from
        if names <= train_normals:  # a cross-fitting part: learnt from all the other parts
            assert colouriser.learnt == train_normals - names
        else:  # training anomalies and test images: one colouriser on all training normals
            assert names == set(range(14)) - train_normals and colouriser.learnt == train_normals


def test_fold_anomaly_maps_runs_end_to_end_and_matches_cross_fitted_maps():
    images = _images(10, 16, seed=3)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    train_index = torch.arange(8)
    maps = fold_anomaly_maps(images, labels, train_index, epochs=1, batch_size=2, val_fraction=0)
    assert maps.shape == (10, 16, 16) and torch.isfinite(maps).all() and (maps >= 0).all()
    normals = cross_fitted_maps(images[:7], 2, epochs=1, batch_size=2, val_fraction=0)
    torch.testing.assert_close(maps[:7], normals)


@pytest.mark.parametrize("labels, train_index, kwargs, message", [
    (torch.zeros(5, dtype=torch.long), torch.arange(4), {}, "labels must have shape"),
    (torch.full((6,), 2), torch.arange(4), {}, "0 \\(normal\\) or 1"),
    (torch.zeros(6, dtype=torch.long), torch.tensor([0, 6]), {}, "outside"),
    (torch.zeros(6, dtype=torch.long), torch.tensor([-1, 2]), {}, "outside"),
    (torch.zeros(6, dtype=torch.long), torch.tensor([0, 0, 1]), {}, "repeated"),
    (torch.zeros(6, dtype=torch.long), torch.tensor([0.0, 1.0]), {}, "integer"),
    (torch.tensor([1, 1, 1, 0, 0, 0]), torch.arange(3), {}, "no normal images"),
    (torch.zeros(6, dtype=torch.long), torch.arange(4), dict(cross_fit_parts=1), "cross_fit_parts"),
    (torch.zeros(6, dtype=torch.long), torch.arange(2), dict(cross_fit_parts=3), "cannot split"),
])
def test_fold_anomaly_maps_rejects_bad_input(labels, train_index, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fold_anomaly_maps(_images(6, 16), labels, train_index, epochs=1, **kwargs)


# Map scaling -----------------------------------------------------------------------------------------
def test_map_scale_is_the_nearest_rank_percentile_of_all_pixels():
    maps = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0)) * 30
    for percentile in (50, 99, 100):
        expected = np.percentile(maps.numpy(), percentile, method="inverted_cdf")
        assert map_scale(maps, percentile) == pytest.approx(expected)
    assert map_scale(maps) == pytest.approx(np.percentile(maps.numpy(), 99, method="inverted_cdf"))


def test_scale_maps_keeps_a_clean_image_cool_unlike_its_own_maximum():
    clean = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    lesion = torch.zeros(1, 8, 8)
    lesion[0, 2:5, 2:5] = 20.0
    maps = torch.cat([clean, lesion])
    scaled = scale_maps(maps, map_scale(maps))
    assert scaled.shape == (2, 1, 8, 8) and scaled.dtype == torch.float32
    assert scaled[0].max() < 0.1 and scaled[1].max() == 1.0
    assert (clean / clean.max()).max() == 1.0  # what per-image max scaling would do instead
    torch.testing.assert_close(scale_maps(maps, 40.0), (maps / 40.0).unsqueeze(1))
    assert scale_maps(maps, 1.0).max() == 1.0  # clipped


@pytest.mark.parametrize("maps, message", [
    (torch.rand(8, 8), "shape"),
    (torch.rand(2, 1, 8, 8), "shape"),
    (np.ones((2, 8, 8)), "torch.Tensor"),
    (torch.zeros(0, 8, 8), "empty"),
    (-torch.rand(2, 8, 8), ">= 0"),
    (torch.full((2, 8, 8), float("nan")), "finite"),
])
def test_map_scaling_rejects_bad_maps(maps, message):
    with pytest.raises(ValueError, match=message):
        map_scale(maps)
    with pytest.raises(ValueError, match=message):
        scale_maps(maps, 1.0)


def test_map_scaling_rejects_a_bad_scale_or_percentile():
    maps = torch.rand(2, 8, 8)
    for scale in (0, -1.0, float("inf"), float("nan"), "1"):
        with pytest.raises(ValueError, match="scale"):
            scale_maps(maps, scale)
    for percentile in (0, 101, -5):
        with pytest.raises(ValueError, match="percentile"):
            map_scale(maps, percentile)
    with pytest.raises(ValueError, match="all zero"):
        map_scale(torch.zeros(2, 8, 8))


# The image score -----------------------------------------------------------------------------------
def test_image_score_is_the_mean_of_each_maps_hottest_pixels():
    # Two 10 x 10 maps: the values 0, 1, ..., 99 in scrambled order, and the same with its 0 made 500.
    ramp = torch.arange(100.0)[torch.randperm(100, generator=torch.Generator().manual_seed(0))].reshape(10, 10)
    spiked = torch.where(ramp == 0, 500.0, ramp)
    maps = torch.stack([ramp, spiked])
    # 1 % of 100 pixels is the hottest one, 5 % the hottest five; 3.4 % rounds to three, 3.6 % to four.
    torch.testing.assert_close(image_score(maps), torch.tensor([99.0, 500.0]))
    torch.testing.assert_close(image_score(maps, top=0.05), torch.tensor([97.0, (96 + 97 + 98 + 99 + 500) / 5]))
    torch.testing.assert_close(image_score(maps, top=0.034), torch.tensor([98.0, (98 + 99 + 500) / 3]))
    torch.testing.assert_close(image_score(maps, top=0.036), torch.tensor([97.5, (97 + 98 + 99 + 500) / 4]))
    torch.testing.assert_close(image_score(maps, top=1), torch.tensor([49.5, 54.5]))     # the whole map's mean
    torch.testing.assert_close(image_score(maps, top=1e-6), torch.tensor([99.0, 500.0]))  # never fewer than 1 pixel
    torch.testing.assert_close(image_score(maps.unsqueeze(1)), image_score(maps))         # (N, 1, H, W), as scale_maps gives
    assert image_score(maps).dtype == torch.float32


@pytest.mark.parametrize("maps, top, message", [
    (torch.rand(8, 8), 0.01, "shape"),
    (torch.rand(2, 2, 8, 8), 0.01, "shape"),
    (np.ones((2, 8, 8)), 0.01, "torch.Tensor"),
    (torch.zeros(0, 1, 8, 8), 0.01, "empty"),
    (-torch.rand(2, 8, 8), 0.01, ">= 0"),
    (torch.full((2, 8, 8), float("nan")), 0.01, "finite"),
    (torch.rand(2, 8, 8), 0, "top"),
    (torch.rand(2, 8, 8), 1.5, "top"),
    (torch.rand(2, 8, 8), True, "top"),
    (torch.rand(2, 8, 8), "1%", "top"),
])
def test_image_score_rejects_bad_input(maps, top, message):
    with pytest.raises(ValueError, match=message):
        image_score(maps, top=top)



# A held-out batch ---------------------------------------------------------------------------------
def test_held_out_batch_keeps_the_first_images_of_each_class_out_of_the_maps_it_scales():
    dataset = make_dataset("retina", n_normal=8, n_anomalous=4, image_size=16, seed=0)
    batch, scaled, scale = held_out_batch(dataset, 2, epochs=1, batch_size=2, val_fraction=0)
    normal, anomalous = (torch.nonzero(dataset.labels == label).flatten() for label in (0, 1))
    kept_out = torch.cat([normal[:2], anomalous[:2]])
    torch.testing.assert_close(batch.images, dataset.images[kept_out])
    assert batch.labels.tolist() == [0, 0, 1, 1] and scaled.shape == (4, 1, 16, 16)
    rest = torch.cat([normal[2:], anomalous[2:]])
    maps = fold_anomaly_maps(dataset.images, dataset.labels, rest, epochs=1, batch_size=2, val_fraction=0)
    assert scale == map_scale(maps[rest])
    torch.testing.assert_close(scaled, scale_maps(maps[kept_out], scale))
