"""An anomaly map from any source: cross-fitting, leakage-free fold maps, scaling, the image score.

LEA-Net's classifier reads a map made by another model: the colouriser of ``lea_tiny.colorize`` in
the paper, an autoencoder in its follow-ups (``lea_tiny.autoencoder``). Whatever makes the map, the
same three questions come before a network may read it, and this module answers them:
which model maps which image, so that no map knows the image it describes; on what scale the
networks read it; and how one number per image ranks images by the map alone.

A map source is a pair: ``trainer(normal_images, epochs, seed=, device=, progress=, **options) ->
model``, which learns from normal images only, and ``make_map(model, images) -> (N, H, W)``. None
stands for the colouriser's pair (``colorize.train_colorizer``, ``colorize.anomaly_map``).

Read top to bottom:
    fewest_normals_to_cross_fit  how many normal images k-part cross-fitting needs
    cross_fitted_maps            maps of normal images from models that never saw them
    fold_anomaly_maps            maps for one cross-validation fold, without leakage
    held_out_batch               a few held-out images with their maps, for looking at a network
    map_scale                    one dataset-level scale, measured on training maps
    scale_maps                   the map as the networks downstream read it
    image_score                  one score per image: the mean of its map's hottest 1 %

Where lea_tiny departs from the released code (docs/released_code.md describes it):
- Training normals never get their map from the colouriser that learnt them. In the released code
  a fold's training normals were the colouriser's own training set, so their maps were smaller than
  those of unseen normals: a shift between training and test maps that the classifier can learn.
  ``fold_anomaly_maps`` cross-fits the training normals instead.
- Maps are divided by one dataset-level scale, the 99th percentile of all training-map pixels,
  and clipped to [0, 1]. The released code divides each map by its own maximum, which stretches
  the faint noise of a clean image to full scale: a clean image looks as hot as a lesion.
  The 99th percentile is a scale that a handful of extreme pixels cannot move, and it lies
  near the top of what normal images show, so clean pixels stay low and lesion pixels saturate.
  The range [0, 1] is the one the released code feeds its networks (CAAN, Direct Attention).
"""

import torch

from lea_tiny import colorize
from lea_tiny.checks import (check_images, check_indices, check_int, check_labels, check_maps, check_number,
                             check_seed, fewest_to_split)

MAP_PERCENTILE = 99.0
IMAGE_SCORE_TOP = 0.01  # the hottest 1 % of a map's pixels


# Maps without leakage ----------------------------------------------------------------------------
def fewest_normals_to_cross_fit(k, val_fraction=colorize.VAL_FRACTION):
    """The fewest normal images that ``cross_fitted_maps`` can split into ``k`` parts.

    The colouriser of each part learns from the other parts, and ``train_colorizer`` needs 2 images
    to train on (BatchNorm) besides those it holds out (``val_fraction``): 3 by default.
    """
    return fewest_to_split(k, colorize.fewest_normals_to_train(val_fraction))


def _check_cross_fit(what, count, k_name, k, trainer, trainer_kwargs):
    # the colouriser holds some of its images out for early stopping; another map source may not
    val_fraction = trainer_kwargs.get("val_fraction", colorize.VAL_FRACTION if trainer is None else 0)
    needed = fewest_normals_to_cross_fit(k, val_fraction)
    if count < needed:
        raise ValueError(f"cannot split {what} into {k_name}={k} parts: at least {needed} are needed, since each "
                         f"part's model learns from the other parts and needs 2 images to train on besides "
                         f"those it validates on; lower {k_name} or add normal images")


def _map_source(trainer, make_map):
    # looked up in colorize at every call, not bound at import: a test can stand in for the colouriser
    return trainer or colorize.train_colorizer, make_map or colorize.anomaly_map


def cross_fitted_maps(normal_images, k, *, epochs, seed=0, device=None, progress=False, trainer=None, make_map=None,
                      **trainer_kwargs):
    """Maps of normal images, each from a model that never saw it: (N, H, W) on the images' device.

    The images are split at random into ``k`` parts; part j's maps come from a model trained
    (``trainer(..., seed=seed + 1 + j)``; None: ``train_colorizer``, mapped by ``anomaly_map``) on the
    other k - 1 parts. So they look like the maps of unseen normal images, at the cost of k trainings
    on (k-1)/k of the data. Each model needs a few images of its own, so k parts need
    ``fewest_normals_to_cross_fit(k)`` images or more.
    """
    check_images(normal_images, "normal_images")
    check_int(k, "k", 2)
    check_seed(seed, more=k)
    _check_cross_fit(f"{normal_images.shape[0]} normal images", normal_images.shape[0], "k", k, trainer,
                     trainer_kwargs)
    trainer, make_map = _map_source(trainer, make_map)
    order = torch.randperm(normal_images.shape[0], generator=torch.Generator().manual_seed(seed))
    maps = torch.empty(normal_images.shape[0], *normal_images.shape[2:], device=normal_images.device)
    for part, held_out in enumerate(torch.tensor_split(order, k)):
        learnt = order[~torch.isin(order, held_out)]
        model = trainer(normal_images[learnt], epochs, seed=seed + 1 + part, device=device, progress=progress,
                        **trainer_kwargs)
        maps[held_out] = make_map(model, normal_images[held_out])
    return maps


def _fold_train_normals(images, labels, train_index, cross_fit_parts, seed, trainer, trainer_kwargs):
    """fold_anomaly_maps' arguments checked; returns the indices of the fold's training normals."""
    check_images(images, "images")
    check_int(cross_fit_parts, "cross_fit_parts", 2)
    check_seed(seed, more=cross_fit_parts)
    labels = check_labels(labels, images.shape[0]).to(images.device)
    train_index = check_indices(train_index, images.shape[0], "train_index").to(images.device)
    train_normals = train_index[labels[train_index] == 0]
    if train_normals.numel() == 0:
        raise ValueError("the training part of the fold holds no normal images to learn the maps from")
    _check_cross_fit(f"the fold's {train_normals.numel()} training normal images", train_normals.numel(),
                     "cross_fit_parts", cross_fit_parts, trainer, trainer_kwargs)
    return train_normals


def fold_anomaly_maps(images, labels, train_index, *, epochs, cross_fit_parts=2, seed=0, device=None, progress=False,
                      trainer=None, make_map=None, **trainer_kwargs):
    """Anomaly maps for all N ``images`` of one cross-validation fold, without leakage.

    The models (colourisers by default, or what ``trainer`` makes) learn from the fold's training
    normals only (``labels == 0`` within ``train_index``). Those training normals get cross-fitted
    maps (``cross_fitted_maps`` with k = ``cross_fit_parts``); every other image (training anomalies, all
    test images) gets its map from one model trained on all the training normals (``seed``). Extra
    keyword arguments go to ``trainer``. Returns (N, H, W) float32 on the images' device.
    """
    train_normals = _fold_train_normals(images, labels, train_index, cross_fit_parts, seed, trainer, trainer_kwargs)
    others = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    others[train_normals] = False
    maps = torch.empty(images.shape[0], *images.shape[2:], device=images.device)
    maps[train_normals] = cross_fitted_maps(images[train_normals], cross_fit_parts, epochs=epochs, seed=seed,
                                            device=device, progress=progress, trainer=trainer, make_map=make_map,
                                            **trainer_kwargs)
    if others.any():
        trainer, make_map = _map_source(trainer, make_map)
        model = trainer(images[train_normals], epochs, seed=seed, device=device, progress=progress, **trainer_kwargs)
        maps[others] = make_map(model, images[others])
    return maps


def held_out_batch(dataset, per_class, *, epochs, seed=0, device=None, **map_options):
    """The first ``per_class`` normal and ``per_class`` anomalous images of ``dataset``, held out, with their maps.

    Every other image is the training part: ``fold_anomaly_maps`` learns the maps from its normals
    (``epochs``, ``seed``, ``device`` and ``map_options`` go there), and the scale is measured on its
    maps alone, so nothing about the batch reaches either. For looking inside networks (chapters 5
    and 6). Returns (batch, scaled maps (2 * per_class, 1, H, W), scale): batch is an
    ``AnomalyDataset`` of the held-out images, normal ones first.
    """
    check_int(per_class, "per_class", 1)
    normal_index = torch.nonzero(dataset.labels == 0).flatten()
    anomalous_index = torch.nonzero(dataset.labels == 1).flatten()
    batch_index = torch.cat([normal_index[:per_class], anomalous_index[:per_class]])
    train_index = torch.cat([normal_index[per_class:], anomalous_index[per_class:]])
    maps = fold_anomaly_maps(dataset.images, dataset.labels, train_index, epochs=epochs, seed=seed, device=device,
                             **map_options)
    scale = map_scale(maps[train_index])
    return dataset.subset(batch_index), scale_maps(maps[batch_index], scale), scale


# Map scaling: what the networks downstream read ----------------------------------------------------
def map_scale(maps, percentile=MAP_PERCENTILE):
    """One scale for a whole dataset: the ``percentile`` (default 99th) of all pixels of TRAINING maps.

    Pass the maps of the training images only (normal and anomalous), so that nothing about the test
    images leaks into the scale. Nearest-rank percentile, computed in torch on the maps' device.
    """
    check_maps(maps)
    check_number(percentile, "percentile", above=0, at_most=100)
    pixels = maps.reshape(-1).float()
    rank = max(1, -(-pixels.numel() * percentile // 100))  # ceil without float rounding of large counts
    scale = pixels.kthvalue(int(rank)).values.item()
    if scale <= 0:
        raise ValueError(f"the {percentile}th percentile of the maps is 0: the training maps are (almost) all zero")
    return scale


def scale_maps(maps, scale):
    """The map as CAAN and the ADN read it: (N, 1, H, W) float32, ``maps / scale`` clipped to [0, 1]."""
    check_maps(maps)
    check_number(scale, "scale (from map_scale)", above=0)
    return (maps.float() / scale).clamp(0.0, 1.0).unsqueeze(1)


# The map as a detector on its own ---------------------------------------------------------------
def image_score(anomaly_maps, top=IMAGE_SCORE_TOP):
    """One anomaly score per image: the mean of the hottest ``top`` fraction of its map's pixels.

    A lesion covers a small part of an image: the mean of the whole map dilutes it in the healthy
    rest, and the hottest pixel alone follows whatever single pixel the colouriser got most wrong.
    The mean of the hottest ``max(1, round(top * H * W))`` pixels (1 % by default) lies between the
    two. This is the score tutorial 04 ranks images by, with no network trained on labels.

    anomaly_maps: (N, H, W) or (N, 1, H, W), finite and >= 0: raw CIEDE2000 maps (``anomaly_map``)
    or scaled ones (``scale_maps``). top: a fraction in (0, 1]. Returns (N,) float32 on the maps'
    device.
    """
    is_tensor = isinstance(anomaly_maps, torch.Tensor)
    if not is_tensor or not (anomaly_maps.ndim == 3 or (anomaly_maps.ndim == 4 and anomaly_maps.shape[1] == 1)):
        got = tuple(anomaly_maps.shape) if is_tensor else type(anomaly_maps).__name__
        raise ValueError(f"anomaly_maps must be a torch.Tensor of shape (N, H, W) or (N, 1, H, W), got {got}")
    maps = anomaly_maps.reshape(anomaly_maps.shape[0], *anomaly_maps.shape[-2:])
    check_maps(maps, "anomaly_maps")
    check_number(top, "top (a fraction of each map's pixels)", above=0, at_most=1)
    pixels = maps.flatten(1).float()
    hottest = max(1, round(pixels.shape[1] * top))
    return pixels.topk(hottest, dim=1).values.mean(dim=1)
