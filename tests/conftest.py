"""Fixtures shared by the training and ablation tests: one tiny data set and its folds, made once."""

import pytest

from lea_tiny.ablation import prepare_folds
from lea_tiny.data import make_dataset

SIZE = 32  # the smallest image size every network accepts


@pytest.fixture(scope="session")
def dataset():
    return make_dataset("retina", n_normal=16, n_anomalous=8, image_size=SIZE, seed=0)


@pytest.fixture(scope="session")
def folds(dataset):
    return prepare_folds(dataset, folds=2, seed=0, colorizer_epochs=1, progress=False)
