"""Anomaly maps from reconstruction (lea_tiny.autoencoder): shapes, no leakage, reproducible, larger where unlike."""

import numpy as np
import pytest
import torch

import lea_tiny.autoencoder as autoencoder_module
from lea_tiny.autoencoder import Autoencoder, fold_reconstruction_maps, reconstruction_map, train_autoencoder

SIZE = 32


def _reddish(count, seed=0):
    """Normal images: a reddish colour with a little texture."""
    generator = torch.Generator().manual_seed(seed)
    colour = torch.tensor([0.7, 0.25, 0.2]).view(1, 3, 1, 1)
    return (colour + 0.05 * torch.randn(count, 3, SIZE, SIZE, generator=generator)).clamp(0, 1)


def test_the_map_is_one_value_per_pixel_in_0_1():
    model = train_autoencoder(_reddish(4), 1, batch_size=2, progress=False)
    assert model.history["train_loss"] and not model.training
    maps = reconstruction_map(model, _reddish(3, seed=1))
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == torch.float32
    assert (maps >= 0).all() and (maps <= 1).all()
    assert Autoencoder(SIZE)(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 3, SIZE, SIZE)


def test_the_map_is_larger_on_an_image_unlike_the_training_normals():
    model = train_autoencoder(_reddish(8), 3, batch_size=4, progress=False)
    unseen_normal = reconstruction_map(model, _reddish(1, seed=5)).mean()
    greenish = reconstruction_map(model, _reddish(1, seed=5)[:, [1, 0, 2]]).mean()  # red and green swapped
    assert greenish > 3 * unseen_normal


def test_a_denoising_autoencoder_trains_on_noisy_inputs():
    plain = reconstruction_map(train_autoencoder(_reddish(4), 1, batch_size=2, progress=False), _reddish(2, 1))
    denoising = train_autoencoder(_reddish(4), 1, batch_size=2, noise=0.1, progress=False)
    assert not torch.equal(reconstruction_map(denoising, _reddish(2, 1)), plain)


def _fold():
    images = torch.cat([_reddish(8), _reddish(4, seed=9)[:, [1, 0, 2]]])  # 8 normals, 4 anomalies
    labels = torch.tensor([0] * 8 + [1] * 4)
    train_index = np.array([0, 1, 2, 3, 4, 8, 9])  # training normals 0..4; the test images are 5..7, 10, 11
    return images, labels, train_index


def test_fold_maps_never_come_from_an_autoencoder_that_saw_the_image(monkeypatch):
    images, labels, train_index = _fold()

    def which(batch):
        return {int((images - image).flatten(1).abs().sum(1).argmin()) for image in batch}

    learnt_by, mapped_by = {}, {}

    def spy_train(normal_images, epochs, **kwargs):
        model = train_autoencoder(normal_images, epochs, **kwargs)
        learnt_by[id(model)] = which(normal_images)
        return model

    def spy_map(model, rgb):
        for index in which(rgb):
            assert index not in mapped_by, "an image was mapped twice"
            mapped_by[index] = id(model)
        return reconstruction_map(model, rgb)

    monkeypatch.setattr(autoencoder_module, "train_autoencoder", spy_train)
    monkeypatch.setattr(autoencoder_module, "reconstruction_map", spy_map)
    maps = fold_reconstruction_maps(images, labels, train_index, epochs=1, batch_size=2)
    assert maps.shape == (12, SIZE, SIZE)

    training_normals = {0, 1, 2, 3, 4}
    assert sorted(mapped_by) == list(range(12)) and len(learnt_by) == 2 + 1
    assert all(learnt <= training_normals for learnt in learnt_by.values())  # only training normals are learnt
    for index, model in mapped_by.items():
        assert index not in learnt_by[model]  # no image is mapped by a model that learnt it
        if index not in training_normals:  # the others: one model on all the training normals
            assert learnt_by[model] == training_normals


def test_same_seed_same_maps():
    images, labels, train_index = _fold()
    first = fold_reconstruction_maps(images, labels, train_index, epochs=1, batch_size=2, seed=3)
    assert torch.equal(first, fold_reconstruction_maps(images, labels, train_index, epochs=1, batch_size=2, seed=3))
    assert not torch.equal(first, fold_reconstruction_maps(images, labels, train_index, epochs=1, batch_size=2, seed=4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(noise=-0.1), r"noise \(the standard deviation of the input noise\) must be a finite number >= 0"),
        (dict(lr=0), "lr must be a finite number > 0"),
        (dict(batch_size=1), "batch_size must be an int >= 2"),
        (dict(normal_images=_reddish(1)), "at least 2 normal images"),
        (dict(normal_images=torch.rand(2, 3, 24, 24)), "multiple of 16"),
        (dict(normal_images=_reddish(2) * 2), r"values in \[0, 1\]"),
    ],
)
def test_bad_training_input_is_refused(kwargs, message):
    arguments = {"normal_images": _reddish(2), "epochs": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        train_autoencoder(arguments.pop("normal_images"), arguments.pop("epochs"), **arguments)


def test_the_map_needs_a_model_in_eval_mode():
    with pytest.raises(ValueError, match="training mode"):
        reconstruction_map(Autoencoder(SIZE).train(), _reddish(1))


def test_reconstruction_maps_are_ordinary_tensors():
    images = torch.rand(4, 3, 32, 32)
    model = train_autoencoder(images, 1, batch_size=2, progress=False)
    maps = reconstruction_map(model, images)
    maps /= 10  # an inference tensor would refuse this
    assert not maps.is_inference()
