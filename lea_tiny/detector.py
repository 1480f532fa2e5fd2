"""One interface for LEA-Net and its relatives, so that one table compares them (chapters 11-14).

A *method* is a function ``train(images, labels, *, epochs, seed=0, device=None, progress=False,
**options)``: it learns from a fold's training part (images (N, 3, H, W) in [0, 1], labels 0/1)
and returns a *detector*, anything with

    score(images)    -> (N,) anomaly scores, higher = more anomalous
    localize(images) -> (N, H, W) anomaly maps, higher = more anomalous; None if the method has none

Each method's docstring says which labels it reads: an unsupervised one learns from the normal
images alone, a weakly supervised one also from the few anomalous images it is given. The methods
are ``lea_tiny.cavga.train``, ``lea_tiny.agpnet.train``, ``lea_tiny.atacnet.train`` and ``train``
below, LEA-Net itself (and its baseline, the same ADN without the map).

Read top to bottom:
    Detector                the protocol: score and localize
    check_images, check_training_labels, check_square, check_same_size   what every method checks
    grad_cam                Grad-CAM (Selvaraju et al. 2017), shared by CAVGA and ATAC-Net
    train_batches           Adam over shuffled, augmented batches: the loop every method shares
    in_batches              a function over images batch by batch, on the model's device
    train / LeaNetDetector  LEA-Net (and its baseline) behind the interface
    pixel_auroc             ranking of pixels against true masks
    stratified_splits       the folds of ``prepare_folds``, without its colourisers
    cross_validate_method   any method over those folds: a CrossValidation
    said                    one row minus another, fold by fold, with its interval and verdict
    save_comparison / load_comparison / saved_comparison   rows on disk, and a saved run to resume
"""

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm

from lea_tiny import autocast, check_int, get_device, seed_everything
from lea_tiny.ablation import best_f1_threshold, fold_seed, split_seed
from lea_tiny.attention import ATTENTION_VARIANTS, make_model
from lea_tiny.colorize import anomaly_map, train_colorizer
from lea_tiny.maps import cross_fitted_maps, map_scale, scale_maps
from lea_tiny.compare import CrossValidation, paired_difference
from lea_tiny.checks import check_both_classes, check_images, check_labels
from lea_tiny.saved_runs import check_same_configuration
from lea_tiny.train import DIHEDRAL_TRANSFORMS, dihedral, f1_and_auroc, fit, write_atomically


@runtime_checkable
class Detector(Protocol):
    """What every method's ``train`` returns (``isinstance(found, Detector)`` checks the two methods exist)."""

    def score(self, images: torch.Tensor) -> torch.Tensor: ...

    def localize(self, images: torch.Tensor) -> torch.Tensor | None: ...


# Checks ------------------------------------------------------------------------------------------------------
def check_training_labels(images, labels, weakly_supervised):
    """The labels as int64 after the checks; both classes are required when the method reads them."""
    check_images(images)
    labels = check_labels(labels, images.shape[0])
    if weakly_supervised:
        check_both_classes(labels, "the training labels")
    elif not bool((labels == 0).any()):
        raise ValueError("the training labels hold no normal (0) image to learn from")
    return labels


def check_square(images, multiple, method):
    """Square images whose side is a multiple of ``multiple`` (each halving of a network must be exact)."""
    if images.shape[-1] != images.shape[-2] or images.shape[-1] % multiple:
        raise ValueError(f"{method} needs square images with a side that is a multiple of {multiple}, got "
                         f"{images.shape[-2]}x{images.shape[-1]}")


def check_same_size(images, size):
    check_images(images)
    if tuple(images.shape[-2:]) != tuple(size):
        raise ValueError(f"images must be {size[0]}x{size[1]} px like the training images, got "
                         f"{images.shape[-2]}x{images.shape[-1]}")


# Grad-CAM ----------------------------------------------------------------------------------------------------
def grad_cam(output, features, create_graph=False):
    """Grad-CAM of a per-image scalar ``output`` (N,) on ``features`` (N, K, h, w): (N, h, w), not rectified.

        alpha_k = mean over positions of d output / d F_k,    cam = sum_k alpha_k F_k

    ``create_graph=True`` keeps the graph, so that a loss on the map can train the network (CAVGA).
    """
    gradients, = torch.autograd.grad(output.sum(), features, create_graph=create_graph, retain_graph=True)
    return (gradients.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)


# The loop every method trains with -----------------------------------------------------------------------------
def on_device(images, device):
    """float32 on ``device``; channels_last on CUDA, where convolutions prefer it."""
    images = images.to(device, torch.float32)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


def train_batches(model, batch_loss, images, labels, *, epochs, lr, batch_size, seed, augment, progress, desc):
    """Adam on ``batch_loss(images, labels, epoch) -> loss`` over shuffled batches; the per-epoch mean losses.

    As ``lea_tiny.train.fit``: the data lives on the device, a torch.Generator seeded with ``seed`` draws
    the order and (``augment``) one of the eight ``dihedral`` symmetries per batch, and a lone last
    image waits for another epoch (BatchNorm needs two). The model ends in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    labels = labels.to(images.device)
    history = []
    model.train()
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(len(images), generator=generator).to(images.device)
        total, seen = torch.zeros((), device=images.device), 0
        for batch in order.split(batch_size):
            if len(batch) == 1:
                continue
            image_batch = images[batch]
            if augment:
                image_batch = dihedral(image_batch, int(torch.randint(DIHEDRAL_TRANSFORMS, (), generator=generator)))
            loss = batch_loss(image_batch, labels[batch], epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
            seen += len(batch)
        history.append(total.item() / max(seen, 1))
    model.eval()
    return history


def in_batches(function, images, device, batch_size=64, needs_grad=False):
    """``function(batch)`` over ``images`` batch by batch on ``device``, in autocast; concatenated on the CPU.

    ``needs_grad`` for functions that take gradients (Grad-CAM); otherwise in inference mode.
    """
    outputs = []
    with (torch.enable_grad() if needs_grad else torch.no_grad()), autocast(device):  # ordinary tensors out
        for batch in images.split(batch_size):
            outputs.append(function(on_device(batch, device)).detach().float().cpu())
    return torch.cat(outputs)


# LEA-Net behind the interface ------------------------------------------------------------------------------------
@dataclass
class LeaNetDetector:
    """A LEA-Net model (``make_model``) with the colouriser and scale that make its maps (None for the baseline)."""
    model: torch.nn.Module
    colorizer: torch.nn.Module | None
    scale: float | None
    device: torch.device

    def _maps(self, images):
        if self.colorizer is None:
            return torch.zeros(len(images), 1, *images.shape[-2:])
        return scale_maps(anomaly_map(self.colorizer, images.to(self.device)), self.scale).cpu()

    def score(self, images):
        check_same_size(images, (self.model.image_size,) * 2)
        # The map rides along as a fourth channel, so that in_batches cuts both into the same batches.
        return in_batches(lambda both: torch.sigmoid(self.model(both[:, :3], both[:, 3:])[0].float()),
                          torch.cat([images, self._maps(images)], dim=1), self.device)

    def localize(self, images):
        """The scaled colour anomaly map (step (a) of LEA-Net); None for the baseline, which reads no map."""
        check_same_size(images, (self.model.image_size,) * 2)
        return None if self.colorizer is None else self._maps(images)[:, 0]


def train(images, labels, *, epochs, seed=0, device=None, progress=False, variant="caan_mobilenet", adn="cnn",
          attention_point=2, colorizer_epochs=10, cross_fit_parts=2, lr=3e-4, batch_size=8, augment=True):
    """LEA-Net (supervised: it reads every label; both classes needed), trained as ``lea_tiny.train.fit`` trains it.

    The colourisers learn from the normals only, the training normals get cross-fitted maps, the other
    images the map of one colouriser trained on all normals (as ``fold_anomaly_maps``; that colouriser
    also maps the test images), and the scale is measured on the training maps. ``variant="baseline"``
    is the ADN alone: no colouriser, no map. The defaults are the teaching configuration of chapter 7.
    """
    labels = check_training_labels(images, labels, weakly_supervised=True)
    check_int(epochs, "epochs", 1)
    check_int(colorizer_epochs, "colorizer_epochs", 1)
    device = get_device(device)
    seed_everything(seed)  # built before the colourisers train, so that a bad variant, ADN or point fails at once
    model = make_model(variant, adn=adn, attention_point=attention_point if variant in ATTENTION_VARIANTS else None,
                       image_size=images.shape[-1])
    colorizer = scale = None
    maps = torch.zeros(len(images), 1, *images.shape[-2:])
    if variant != "baseline":
        normals = images[labels == 0]
        raw = torch.empty(len(images), *images.shape[-2:])
        raw[labels == 0] = cross_fitted_maps(normals, cross_fit_parts, epochs=colorizer_epochs, seed=seed,
                                             device=device).cpu()
        colorizer = train_colorizer(normals, colorizer_epochs, seed=seed, device=device, progress=False)
        if bool((labels == 1).any()):
            raw[labels == 1] = anomaly_map(colorizer, images[labels == 1].to(device)).cpu()
        scale = map_scale(raw)
        maps = scale_maps(raw, scale)
    fit(model, images, maps, labels, epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, device=device,
        seed=seed, progress=progress)
    return LeaNetDetector(model, colorizer, scale, device)


# Measuring a detector ----------------------------------------------------------------------------------------------
def pixel_auroc(maps, masks):
    """AUROC of all pixels of all images pooled, ``maps`` (N, H, W) against ``masks`` (N, H, W) bool.

    Pooled over normal and anomalous images, as for MVTec AD: a map must also stay cool on normal images.
    """
    if not isinstance(maps, torch.Tensor) or not isinstance(masks, torch.Tensor) or maps.shape != masks.shape \
            or maps.ndim != 3:
        raise ValueError("maps and masks must be tensors of the same shape (N, H, W)")
    truth = masks.reshape(-1).cpu().numpy().astype(bool)
    if truth.all() or not truth.any():
        raise ValueError("pixel AUROC needs both anomalous and normal pixels in the masks")
    return float(roc_auc_score(truth, maps.reshape(-1).float().cpu().numpy()))


@dataclass(frozen=True)
class Split:
    """One fold of one repeat: which images train and which test (a ``Fold`` without its colour anomaly maps)."""
    number: int
    repeat: int
    train_index: np.ndarray
    test_index: np.ndarray


def stratified_splits(labels, folds=3, seed=0, repeats=1):
    """The splits of ``prepare_folds(dataset, folds, seed, repeats=repeats)``, without training its colourisers.

    The methods of this module make their own maps, so they need only the splits; the same
    ``StratifiedKFold`` seeds give the same folds, so rows measured on either pair fold by fold.
    """
    labels = np.asarray(labels)
    check_int(folds, "folds", 2)
    check_int(repeats, "repeats", 1)
    return [Split(number, repeat, train_index, test_index) for repeat in range(repeats)
            for number, (train_index, test_index) in enumerate(
                StratifiedKFold(n_splits=folds, shuffle=True, random_state=split_seed(seed, repeat))
                .split(np.zeros(len(labels)), labels))]


@dataclass
class MethodCrossValidation(CrossValidation):
    """A CrossValidation whose row is a method (its ``variant`` is the method's name), not a row of Table 3."""

    @property
    def label(self):
        return self.variant

    def on(self, metric):
        """The same row with ``metric`` (e.g. "pixel_auroc") in the place of "auroc", for ``paired_difference``."""
        if any(metric not in fold for fold in self.folds):
            raise ValueError(f"{self.variant} has no {metric!r} on every fold "
                             f"(a method without maps has no pixel AUROC)")
        return replace(self, folds=[dict(fold, auroc=fold[metric]) for fold in self.folds])


def cross_validate_method(method, dataset, folds, *, name, epochs, seed=0, device=None, progress=False, **options):
    """A method's ``train(..., epochs=epochs, **options)`` on every fold of ``folds``: a CrossValidation.

    ``folds`` from ``stratified_splits`` or ``prepare_folds`` (only their splits are used: every method
    makes the maps it needs itself).

    Each fold is trained with its own seed (as ``cross_validate``), scored on its test part: image
    AUROC; F1 of the anomalous class at the threshold with the best F1 on the training part's scores
    (a score is not a probability for most methods, so 0.5 means nothing); pixel AUROC against the
    masks where the data set has masks and the method localises; and the seconds training took.
    """
    labels = torch.as_tensor(dataset.labels)
    folds_done = []
    for fold in tqdm(folds, desc=name, disable=not progress, leave=False):
        train_index, test_index = torch.from_numpy(fold.train_index), torch.from_numpy(fold.test_index)
        started = time.perf_counter()
        detector = method(dataset.images[train_index], labels[train_index], epochs=epochs,
                         seed=fold_seed(seed, fold.number, fold.repeat), device=device, **options)
        seconds = time.perf_counter() - started
        train_scores = detector.score(dataset.images[train_index])
        test_scores = detector.score(dataset.images[test_index])
        threshold = best_f1_threshold(train_scores.numpy(), labels[train_index].numpy())
        record = dict(repeat=fold.repeat, fold=fold.number, n_train=len(train_index), n_test=len(test_index),
                      seconds=seconds, **f1_and_auroc(test_scores, labels[test_index], threshold))
        maps = detector.localize(dataset.images[test_index])
        if maps is not None and dataset.masks is not None:
            record["pixel_auroc"] = pixel_auroc(maps, dataset.masks[test_index])
        folds_done.append(record)
    return MethodCrossValidation(name, "", None, 0, folds_done)


def save_comparison(results, path, config):
    """Write the rows (MethodCrossValidation) and the ``config`` that made them to ``path`` as JSON."""
    record = dict(config=config, results=[asdict(result) for result in results])
    write_atomically(Path(path), lambda file: file.write(json.dumps(record, indent=1).encode()))


def load_comparison(path):
    """(rows, config) saved by ``save_comparison``."""
    record = json.loads(Path(path).read_text())
    return [MethodCrossValidation(**result) for result in record["results"]], record["config"]


def saved_comparison(out_dir, config):
    """({name: row}, config) of the comparison a run with ``config`` saved in ``out_dir``, to resume it.

    ({}, {}) when nothing is saved there; a run saved with another configuration is refused.
    """
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return {}, {}
    rows, saved = load_comparison(path)
    check_same_configuration(out_dir, saved, config)
    return {row.label: row for row in rows}, saved


def said(result, reference, metric="auroc"):
    """"+0.012 [-0.034, +0.058] cannot be told apart": ``result`` minus ``reference`` in ``metric``, fold by fold."""
    difference = paired_difference(result.on(metric), reference.on(metric))
    return f"{difference} {difference.verdict}"
