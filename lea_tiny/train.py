"""Section 4 of the paper: training LEA-Net and measuring it (Eq. 1, Section 4-2, Table 3).

LEA-Net learns its two networks together. The anomaly detection network (ADN) reads the RGB image
and the colour anomaly attention network (CAAN) reads the colour anomaly map; both end in one
logit "is this image anomalous?", and the loss is the sum of their binary cross-entropies (Eq. 1).
The CAAN's loss is what teaches it to make attention maps that point at anomalies. Section 4-2 fixes
the rest: Adam, learning rate 1e-4 for ResNet18 and 1e-5 for VGG16, batch 16, 100 epochs, no
augmentation, stratified five-fold cross-validation; Table 3 reports the F1 score of the anomalous
class as mean ± std over the folds, for attention models at the best of the five attention points.

Read top to bottom:
    default_lr        the paper's learning rate for an ADN
    joint_loss        Eq. 1: BCE(ADN) + BCE(CAAN)
    fit               Adam over the data for some epochs; the last epoch's weights are kept
    evaluate          F1 of the anomalous class at 0.5 (the paper's metric) and image AUROC
    prepare_folds     stratified folds, each with its own colourisers and scaled maps
    cross_validate    one variant over the folds: per fold and mean ± std
    run_ablation      Table 3 for one ADN, saved to disk; load_results reads it back
    save_checkpoint / load_checkpoint

Where lea_tiny departs from the paper or the released code (/work/shared/paper/official-code-notes.md):
- Each network ends in one logit and a sigmoid, the "BCE" of Eq. 1. The released code ends in two
  softmax outputs; for two classes the two are the same model written twice (the softmax of two
  logits is the sigmoid of their difference), and argmax equals "sigmoid > 0.5".
- Folds are seeded (``StratifiedKFold(shuffle=True, random_state=seed)``), model initialisation and
  batch order too, so a run repeats on the CPU. The released code's folds are not reproducible.
- Inside each fold the colouriser learns from that fold's training normals only, the training
  normals get cross-fitted maps, and the map scale is measured on the training maps alone
  (``lea_tiny.colorize.fold_anomaly_maps``): nothing about the test images leaks into training.
- Besides F1 we report the image AUROC. F1 at the fixed threshold 0.5 depends on calibration: on a
  small imbalanced fold a classifier that ranks images well can still score F1 = 0 if it never
  crosses 0.5. AUROC measures the ranking alone, so it tells "learnt nothing" from "badly calibrated".
- The standard deviation over folds is the population one (``numpy.std``); the paper does not say.
"""

import csv
import datetime
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from torch import nn
from tqdm.auto import tqdm

from lea_tiny import autocast, check_int, get_device, seed_everything
from lea_tiny.attention import ATTENTION_VARIANTS, VARIANTS, make_model
from lea_tiny.colorize import fold_anomaly_maps, map_scale, scale_maps

PAPER_EPOCHS = 100  # Section 4-2, the classifiers
PAPER_COLORIZER_EPOCHS = 500  # Section 4-2, the U-Net (with early stopping)
METRICS = ("f1", "auroc")
CHECKPOINT_FORMAT = "lea_tiny checkpoint 1"
# Row labels as Table 3 prints them.
ADN_LABELS = {"resnet18": "ResNet18", "resnet50": "ResNet50", "vgg16": "VGG16", "vgg19": "VGG19", "cnn": "CNN"}
VARIANT_LABELS = {
    "baseline": "{adn}",
    "anomaly_map_input": "{adn} (AnomalyMap input)",
    "4ch_input": "{adn} (4ch input)",
    "attentioned_input": "{adn} (Attentioned input)",
    "direct_attention": "{adn} + Direct Attention",
    "caan_mobilenet": "{adn} + MobileNet-small CAAN",
    "caan_resnet": "{adn} + ResNet-based CAAN",
}


# Checking what comes in ---------------------------------------------------------------------------
def _check_lr(lr):
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise ValueError(f"lr must be a positive number (or None for the paper's), got {lr!r}")


def _check_labels(labels, count, name="labels"):
    labels = torch.as_tensor(labels)
    if labels.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},), one per image, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integers 0 (normal) or 1 (anomalous), got dtype {labels.dtype}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{name} must be 0 (normal) or 1 (anomalous), got values {labels.unique().tolist()}")
    return labels.long()


def _check_both_classes(labels, what):
    present = set(labels.unique().tolist())
    if present != {0, 1}:
        only = "normal" if present == {0} else "anomalous"
        raise ValueError(f"{what} holds only {only} images; it needs both normal (0) and anomalous (1) ones")


def _check_inputs(model, images, anomaly_maps, labels):
    """The checks every entry point that feeds a model shares; returns the labels as int64."""
    if not isinstance(model, nn.Module) or not hasattr(model, "adn_name"):
        raise ValueError(f"model must be a LEA-Net model from lea_tiny.attention.make_model, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (N = 0)")
    if not images.is_floating_point() or images.min().item() < 0 or images.max().item() > 1:
        raise ValueError("images must be floating point with values in [0, 1]")
    expected = (images.shape[0], 1, *images.shape[2:])
    if not isinstance(anomaly_maps, torch.Tensor) or tuple(anomaly_maps.shape) != expected:
        shape = tuple(anomaly_maps.shape) if isinstance(anomaly_maps, torch.Tensor) else type(anomaly_maps).__name__
        raise ValueError(f"anomaly_maps must have shape {expected} to match images, got {shape}")
    if not anomaly_maps.is_floating_point() or not bool(((anomaly_maps >= 0) & (anomaly_maps <= 1)).all()):
        raise ValueError("anomaly_maps must be scaled to [0, 1]; scale them with lea_tiny.colorize.scale_maps")
    return _check_labels(labels, images.shape[0])


def _check_dataset(dataset, folds):
    if not all(hasattr(dataset, name) for name in ("images", "labels")):
        raise ValueError(f"dataset must be an AnomalyDataset (with .images and .labels), got {type(dataset).__name__}")
    images = dataset.images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or images.shape[2] != images.shape[3]:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"dataset.images must be square RGB images of shape (N, 3, S, S), got {shape}")
    labels = _check_labels(dataset.labels, images.shape[0], "dataset.labels")
    _check_both_classes(labels, "the dataset")
    check_int(folds, "folds", 2)
    for label, name in ((0, "normal"), (1, "anomalous")):
        count = int((labels == label).sum())
        if count < folds:
            raise ValueError(f"the dataset has {count} {name} images, fewer than folds={folds}: "
                             f"each fold needs at least one image of each class")
    return labels


# Section 4-2 ------------------------------------------------------------------------------------
def default_lr(adn_name):
    """The paper's Adam learning rate for an ADN: 1e-5 for the VGGs, 1e-4 for the others (Section 4-2).

    The paper gives 1e-4 for ResNet18 and 1e-5 for VGG16; ResNet50 and the basic CNN follow ResNet18,
    VGG19 follows VGG16.
    """
    if adn_name not in ADN_LABELS:
        raise ValueError(f"unknown ADN {adn_name!r}; expected one of {sorted(ADN_LABELS)}")
    return 1e-5 if adn_name.startswith("vgg") else 1e-4


def joint_loss(adn_logit, caan_logit, labels):
    """Eq. 1: L = BCE(CAAN) + BCE(ADN), equal weights. Returns (loss, adn_loss, caan_loss).

    Models without a CAAN (``caan_logit is None``) train on the ADN's loss alone; their
    ``caan_loss`` is None. Logits are taken in float32 even when the forward pass ran in bf16.
    """
    targets = labels.float()
    adn_loss = F.binary_cross_entropy_with_logits(adn_logit.float(), targets)
    if caan_logit is None:
        return adn_loss, adn_loss, None
    caan_loss = F.binary_cross_entropy_with_logits(caan_logit.float(), targets)
    return adn_loss + caan_loss, adn_loss, caan_loss


def _on_device(device, images, anomaly_maps):
    """The data as one tensor each on the device; channels_last on CUDA, where convolutions prefer it."""
    images, anomaly_maps = images.to(device, torch.float32), anomaly_maps.to(device, torch.float32)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
        anomaly_maps = anomaly_maps.contiguous(memory_format=torch.channels_last)
    return images, anomaly_maps


def fit(model, images, anomaly_maps, labels, *, epochs, lr=None, batch_size=16, device=None, seed=0,
        progress=True, compile=False):
    """Train ``model`` (from ``make_model``) on the joint loss of Eq. 1; return the per-epoch losses.

    images (N, 3, H, W) in [0, 1]; anomaly_maps (N, 1, H, W) scaled to [0, 1] (``scale_maps``);
    labels (N,) 0 = normal, 1 = anomalous, both present. Adam with ``lr`` (None: the paper's,
    ``default_lr(model.adn_name)``), ``batch_size`` images per step, reshuffled every epoch by a
    torch.Generator seeded with ``seed``; no augmentation and no early stopping, so the last
    epoch's weights are kept, as in the paper. A batch of a single image is skipped (BatchNorm
    cannot train on one); that image waits for another epoch's shuffle.

    The data lives on the device as one tensor (small datasets; no DataLoader). On CUDA the model
    runs in bf16 autocast and channels_last; ``compile=True`` trains through ``torch.compile``.
    Returns dict(loss=[...], adn_loss=[...], caan_loss=[...]) of epoch means (``caan_loss`` stays
    empty for models without a CAAN), and leaves the model on ``device`` in eval mode.
    """
    labels = _check_inputs(model, images, anomaly_maps, labels)
    _check_both_classes(labels, "the training labels")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)  # BatchNorm trains on 2 images or more
    _check_lr(lr)

    device = get_device(device)
    seed_everything(seed)  # dropout, where a model has it
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=lr or default_lr(model.adn_name))
    images, anomaly_maps = _on_device(device, images, anomaly_maps)
    labels = labels.to(device)
    count = len(labels)

    history = dict(loss=[], adn_loss=[], caan_loss=[])
    model.train()
    bar = tqdm(range(epochs), desc=f"training {model.variant}", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(count, generator=generator).to(device)
        totals, seen = {}, 0  # sums stay on the device: one sync per epoch, not one per step
        for start in range(0, count, batch_size):
            batch = order[start:start + batch_size]
            if len(batch) == 1:
                continue
            with autocast(device):
                adn_logit, caan_logit = step_model(images[batch], anomaly_maps[batch])
            loss, adn_loss, caan_loss = joint_loss(adn_logit, caan_logit, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in (("loss", loss), ("adn_loss", adn_loss), ("caan_loss", caan_loss)):
                if value is not None:
                    totals[name] = totals.get(name, 0) + value.detach() * len(batch)
            seen += len(batch)
        for name, total in totals.items():
            history[name].append(total.item() / seen)
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
    model.eval()
    return history


# The paper's metric -----------------------------------------------------------------------------
def anomaly_scores(model, images, anomaly_maps, batch_size=64):
    """sigmoid(ADN logit) per image, (N,) float32 on the CPU: the model's probability of "anomalous".

    Runs the model as it is (call ``model.eval()`` first), on the model's device, batch by batch.
    """
    device = next(model.parameters()).device
    images, anomaly_maps = _on_device(device, images, anomaly_maps)
    scores = []
    with torch.inference_mode(), autocast(device):
        for image_batch, map_batch in zip(images.split(batch_size), anomaly_maps.split(batch_size)):
            adn_logit, _ = model(image_batch, map_batch)
            scores.append(torch.sigmoid(adn_logit.float()))
    return torch.cat(scores).cpu()


def evaluate(model, images, anomaly_maps, labels, device=None):
    """F1 of the anomalous class at threshold 0.5 (the paper's metric) and image AUROC.

    An image counts as anomalous when sigmoid(ADN logit) > 0.5, the argmax of the released code's
    two softmax outputs. F1 with ``zero_division=0`` (no anomaly predicted and none present: 0).
    The labels must hold both classes, since AUROC needs them. Returns dict(f1=float,
    auroc=float, scores=(N,) tensor of sigmoid(ADN logit)); the model ends in eval mode on ``device``.
    """
    labels = _check_inputs(model, images, anomaly_maps, labels)
    _check_both_classes(labels, "the evaluation labels (AUROC needs both classes)")
    model.to(get_device(device)).eval()
    scores = anomaly_scores(model, images, anomaly_maps)
    truth = labels.cpu().numpy()
    return dict(f1=float(f1_score(truth, (scores > 0.5).numpy(), zero_division=0)),
                auroc=float(roc_auc_score(truth, scores.numpy())),
                scores=scores)


# Cross-validation (Section 4-2) ---------------------------------------------------------------------
@dataclass
class Fold:
    """One fold of a stratified k-fold split, with the colour anomaly maps made for it.

    ``anomaly_maps`` (N, H, W) are the CIEDE2000 maps of ALL images of the dataset, made by the
    fold's own colourisers (trained on its training normals only); ``scale`` is ``map_scale`` of
    the training images' maps; ``scaled_maps`` (N, 1, H, W) is what the networks read.
    """
    number: int
    train_index: np.ndarray
    test_index: np.ndarray
    anomaly_maps: torch.Tensor
    scale: float
    scaled_maps: torch.Tensor = field(repr=False)


def _fold_seed(seed, fold_number):
    # Each fold gets its own seeds for colourisers, initialisation and batch order; the colourisers
    # of one fold use seed .. seed + cross_fit, so a stride of 100 keeps folds apart.
    return seed + 100 * fold_number


def prepare_folds(dataset, folds=5, seed=0, colorizer_epochs=PAPER_COLORIZER_EPOCHS, cross_fit=2, device=None,
                  progress=True):
    """Split ``dataset`` into stratified folds and make each fold's colour anomaly maps; return [Fold].

    The split is ``StratifiedKFold(folds, shuffle=True, random_state=seed)``. In each fold the
    colourisers learn from the training normals only (``fold_anomaly_maps`` with ``cross_fit``
    parts), and the scale is measured on the training maps. The colouriser part is the same for
    every variant, so ``cross_validate`` and ``run_ablation`` take these folds and reuse them.
    """
    labels = _check_dataset(dataset, folds)
    check_int(colorizer_epochs, "colorizer_epochs", 1)
    check_int(cross_fit, "cross_fit", 2)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(labels)), labels.numpy()))
    prepared = []
    for number, (train_index, test_index) in enumerate(tqdm(splits, desc="colour anomaly maps per fold",
                                                            disable=not progress)):
        maps = fold_anomaly_maps(dataset.images, labels, torch.from_numpy(train_index), epochs=colorizer_epochs,
                                 cross_fit=cross_fit, seed=_fold_seed(seed, number), device=device)
        scale = map_scale(maps[torch.from_numpy(train_index).to(maps.device)])
        prepared.append(Fold(number, train_index, test_index, maps, scale, scale_maps(maps, scale)))
    return prepared


def _count_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass
class CrossValidation:
    """One variant's cross-validation: ``folds`` holds a dict per fold (f1, auroc, history, ...)."""
    variant: str
    adn: str
    attention_point: int | None
    params: int
    folds: list

    @property
    def label(self):
        """The row label of Table 3, e.g. "ResNet18 + MobileNet-small CAAN"."""
        return VARIANT_LABELS[self.variant].format(adn=ADN_LABELS[self.adn])

    @property
    def mean(self):
        return {metric: float(np.mean([fold[metric] for fold in self.folds])) for metric in METRICS}

    @property
    def std(self):
        return {metric: float(np.std([fold[metric] for fold in self.folds])) for metric in METRICS}

    def __str__(self):
        return f"{self.mean['f1']:.3f} ± {self.std['f1']:.3f}"


def _check_fold_maps(fold_maps, dataset, folds):
    if not isinstance(fold_maps, (list, tuple)) or not all(isinstance(fold, Fold) for fold in fold_maps):
        raise ValueError("fold_maps must be the list of folds returned by prepare_folds")
    if len(fold_maps) != folds:
        raise ValueError(f"fold_maps holds {len(fold_maps)} folds but folds={folds}")
    if any(fold.scaled_maps.shape[0] != len(dataset.labels) for fold in fold_maps):
        raise ValueError("fold_maps were prepared for a dataset of another size")


def cross_validate(variant, dataset, folds=5, seed=0, adn="resnet18", attention_point=None, epochs=PAPER_EPOCHS,
                   colorizer_epochs=PAPER_COLORIZER_EPOCHS, cross_fit=2, batch_size=16, lr=None, device=None,
                   progress=True, fold_maps=None):
    """Stratified k-fold cross-validation of one variant (Section 4-2); returns a CrossValidation.

    Each fold: a fresh ``make_model(variant, adn, attention_point, image_size)`` (initialised from the
    fold's seed), ``fit`` on the training part for ``epochs``, ``evaluate`` on the test part.
    ``fold_maps`` from ``prepare_folds`` (same dataset and ``folds``) skips the colourisers; without
    it they are trained here (``colorizer_epochs``, ``cross_fit``). ``seed`` seeds each fold's model
    initialisation and batch order, and the split when the folds are made here. Same seed, same
    numbers on the CPU. ``str(result)`` is "F1 mean ± std".
    """
    labels = _check_dataset(dataset, folds)
    image_size = dataset.images.shape[-1]
    # Build one model before any training so that a bad variant, ADN or point fails at once.
    params = _count_parameters(make_model(variant, adn=adn, attention_point=attention_point, image_size=image_size))
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)
    _check_lr(lr)
    if fold_maps is None:
        fold_maps = prepare_folds(dataset, folds, seed, colorizer_epochs, cross_fit, device, progress)
    _check_fold_maps(fold_maps, dataset, folds)

    result = CrossValidation(variant, adn, attention_point, params, folds=[])
    description = result.label + (f" at point {attention_point}" if attention_point else "")
    for fold in tqdm(fold_maps, desc=description, disable=not progress, leave=False):
        fold_seed = _fold_seed(seed, fold.number)
        seed_everything(fold_seed)
        model = make_model(variant, adn=adn, attention_point=attention_point, image_size=image_size)
        train, test = torch.from_numpy(fold.train_index), torch.from_numpy(fold.test_index)
        history = fit(model, dataset.images[train], fold.scaled_maps[train], labels[train], epochs=epochs, lr=lr,
                      batch_size=batch_size, device=device, seed=fold_seed, progress=progress)
        metrics = evaluate(model, dataset.images[test], fold.scaled_maps[test], labels[test], device=device)
        result.folds.append(dict(fold=fold.number, f1=metrics["f1"], auroc=metrics["auroc"],
                                 n_train=len(train), n_test=len(test), history=history))
    return result


# Table 3 ----------------------------------------------------------------------------------------------
def _format_params(count):
    return f"{count / 1e6:.1f}M" if count >= 100_000 else f"{count / 1e3:.1f}k"


@dataclass
class AblationTable:
    """Every cross-validation of an ablation run, with its configuration; prints as Table 3 in Markdown.

    ``results`` holds one CrossValidation per variant and attention point; ``rows`` keeps, per
    variant, the attention point with the best mean F1, as Table 3 does. ``fold_maps`` are the
    folds the run trained on (from ``prepare_folds``; not saved, so None after ``load_results``).
    """
    results: list
    config: dict
    environment: dict
    fold_maps: list = field(default=None, repr=False)

    @property
    def rows(self):
        best = {}
        for result in self.results:  # first of equal F1s wins: the earlier attention point
            if result.variant not in best or result.mean["f1"] > best[result.variant].mean["f1"]:
                best[result.variant] = result
        return list(best.values())

    def to_markdown(self):
        lines = ["| model | params | F1 (best point) | AUROC |", "| --- | ---: | --- | --- |"]
        for row in self.rows:
            point = f" ({row.attention_point})" if row.variant in ATTENTION_VARIANTS else ""
            auroc = f"{row.mean['auroc']:.3f} ± {row.std['auroc']:.3f}"
            lines.append(f"| {row.label} | {_format_params(row.params)} | {row}{point} | {auroc} |")
        return "\n".join(lines)

    __str__ = to_markdown

    def _repr_markdown_(self):
        return self.to_markdown()

    def save(self, out_dir):
        """Write results.json (every fold, config, environment), results.csv and results.md to ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        record = dict(config=self.config, environment=self.environment,
                      results=[asdict(result) for result in self.results])
        _write_atomically(out_dir / "results.json", lambda file: file.write(json.dumps(record, indent=1).encode()))
        _write_atomically(out_dir / "results.md", lambda file: file.write((self.to_markdown() + "\n").encode()))
        with open(out_dir / "results.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["model", "variant", "attention_point", "params", "f1_mean", "f1_std",
                             "auroc_mean", "auroc_std"])
            for row in self.rows:
                writer.writerow([row.label, row.variant, row.attention_point or "", row.params, row.mean["f1"],
                                 row.std["f1"], row.mean["auroc"], row.std["auroc"]])
        return out_dir


def _environment(device):
    """What a run needs to be repeated: torch, the device, the CPU threads (see seed_everything), the date."""
    device = get_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return dict(torch=torch.__version__, device=str(device), device_name=name, threads=torch.get_num_threads(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def run_ablation(dataset, adn="resnet18", variants=VARIANTS, attention_points=(1, 2, 3, 4, 5), folds=5, seed=0,
                 epochs=PAPER_EPOCHS, colorizer_epochs=PAPER_COLORIZER_EPOCHS, cross_fit=2, batch_size=16, lr=None,
                 out_dir=None, device=None, progress=True, fold_maps=None):
    """Table 3 for one ADN: cross-validate every variant, each attention variant at every attention point.

    The colourisers are trained once per fold (``prepare_folds``, or pass ``fold_maps``) and shared by
    all variants. With ``out_dir`` the results are saved there (``AblationTable.save``). Returns an
    AblationTable; print it for the Markdown table.
    """
    variants = tuple(variants)
    attention_points = tuple(attention_points)
    if not variants:
        raise ValueError("variants is empty")
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    if any(variant in ATTENTION_VARIANTS for variant in variants) and not attention_points:
        raise ValueError("attention_points is empty but attention variants were asked for")
    runs = [(variant, point if variant in ATTENTION_VARIANTS else None)
            for variant in variants for point in (attention_points if variant in ATTENTION_VARIANTS else (None,))]
    _check_dataset(dataset, folds)
    image_size = dataset.images.shape[-1]
    for variant, point in runs:  # every model builds before hours of training start
        make_model(variant, adn=adn, attention_point=point, image_size=image_size)
    if fold_maps is None:
        fold_maps = prepare_folds(dataset, folds, seed, colorizer_epochs, cross_fit, device, progress)

    results = [cross_validate(variant, dataset, folds, seed, adn, point, epochs, colorizer_epochs, cross_fit,
                              batch_size, lr, device, progress, fold_maps)
               for variant, point in tqdm(runs, desc=f"ablation ({ADN_LABELS[adn]})", disable=not progress)]
    labels = torch.as_tensor(dataset.labels)
    config = dict(dataset=getattr(dataset, "name", "?"), n_normal=int((labels == 0).sum()),
                  n_anomalous=int((labels == 1).sum()), image_size=image_size, adn=adn, variants=list(variants),
                  attention_points=list(attention_points), folds=folds, seed=seed, epochs=epochs,
                  colorizer_epochs=colorizer_epochs, cross_fit=cross_fit, batch_size=batch_size,
                  lr=lr or default_lr(adn))
    table = AblationTable(results, config, _environment(device), fold_maps)
    if out_dir is not None:
        table.save(out_dir)
    return table


def load_results(path):
    """Read an ablation saved by ``run_ablation(out_dir=...)`` back: ``path`` is the folder or its results.json."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no saved results at {path}")
    try:
        record = json.loads(path.read_text())
        results = [CrossValidation(**result) for result in record["results"]]
        return AblationTable(results, record["config"], record["environment"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a results.json written by lea_tiny: {error}") from error


# Checkpoints ----------------------------------------------------------------------------------------------
def _write_atomically(path, write):
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_checkpoint(path, model, config):
    """Save ``model``'s weights and ``config`` to ``path`` atomically; ``load_checkpoint`` rebuilds it.

    ``config`` is a dict of plain values (str, int, float, bool, None, lists, dicts) and must hold
    ``image_size``; add what else the model needs to be used (e.g. the map ``scale``). The model's
    variant, ADN and attention point are added from the model itself.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "variant"):
        raise ValueError(f"model must be a LEA-Net model from make_model, got {type(model).__name__}")
    if not isinstance(config, dict) or "image_size" not in config:
        raise ValueError("config must be a dict holding at least 'image_size' (the model's input size)")
    config = dict(config, variant=model.variant, adn=model.adn_name, attention_point=model.attention_point)
    try:
        json.dumps(config)
    except TypeError as error:
        raise ValueError(f"config must hold plain values only (str, numbers, None, lists, dicts): {error}") from error
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    checkpoint = dict(format=CHECKPOINT_FORMAT, config=config, state_dict=state)
    _write_atomically(path, lambda file: torch.save(checkpoint, file))


def load_checkpoint(path, device=None):
    """Rebuild the model saved at ``path`` on ``device``, in eval mode; returns (model, config).

    Loads with ``weights_only=True``: a checkpoint can hold tensors and plain values, never code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format is {checkpoint.get('format')!r}")
        config = checkpoint["config"]
        model = make_model(config["variant"], adn=config["adn"], attention_point=config["attention_point"],
                           image_size=config["image_size"])
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as error:
        raise ValueError(f"{path} is not a readable lea_tiny checkpoint: {error}") from error
    return model.to(get_device(device)).eval(), config
