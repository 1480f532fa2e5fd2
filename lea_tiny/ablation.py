"""Section 4-2 and Table 3: cross-validation and the ablation, measured so that it can decide.

The paper cross-validates every row of Table 3 with five stratified folds, once, and reports the F1
of the anomalous class as mean ± std, for attention models at the best of the five attention
points. On a few hundred images the spread between folds is as large as the differences between
rows, and choosing the best of five points on the test folds flatters the attention rows. So
lea_tiny measures the same rows in a way that can decide:

- **Repeated folds.** ``repeats`` differently seeded stratified k-fold splits; every variant of an
  ablation sees the same splits and the same colour anomaly maps, so two rows can be compared fold
  by fold (paired), which removes the part of the noise that comes from which images a fold holds.
- **An interval, not a ranking.** ``paired_difference`` gives the mean paired difference with a
  95 % interval; an interval that covers 0 means the two rows cannot be told apart on this data.
- **A fairly chosen point.** Beside Table 3's best point on the test folds, ``choose_point`` picks
  the point on a validation split inside each training part, so it competes with the baseline on
  equal terms; the gap between the two rows is what selection on the test folds adds.
- **Where the knowledge is.** ``map_alone`` scores each image by its colour anomaly map with no
  training (chapter 4's image score), and each CAAN's own head gets a row: if those beat the ADN's
  output, the ADN does not carry what the map knows.

Read top to bottom:
    prepare_folds       repeats x folds, each fold with its own colourisers and scaled maps
    cross_validate      one variant over every fold of every repeat
    map_alone           the colour anomaly map as a detector, with no training
    choose_point        an attention point chosen on validation data inside a training part
    run_ablation        all of it for one ADN, saved as it goes; the table is ``lea_tiny.compare``

Where lea_tiny departs from the paper: folds are seeded (the released code's are not reproducible);
inside each fold the colouriser learns from that fold's training normals only and the training
normals get cross-fitted maps (``lea_tiny.maps.fold_anomaly_maps``); standard deviations over
folds are the population ones (``numpy.std``; the paper does not say).
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm.auto import tqdm

from lea_tiny import seed_everything
from lea_tiny.attention import ATTENTION_POINTS, ATTENTION_VARIANTS, make_model
from lea_tiny.checks import check_bool, check_both_classes, check_images, check_int, check_labels, fewest_to_split
from lea_tiny.maps import fewest_normals_to_cross_fit, image_score, map_scale, scale_maps
from lea_tiny.adn import ADN_NAMES
from lea_tiny.compare import AblationTable, CrossValidation, load_results, point_text
from lea_tiny.protocol import MAP_SOURCES, PAPER
from lea_tiny.saved_runs import check_out_dir, check_same_configuration, run_environment
from lea_tiny.two_stage import fit_two_stage
from lea_tiny.train import evaluate, f1_and_auroc, fit, write_atomically

VALIDATION_FRACTION = 1 / 3  # of a training part, for choose_point


def _check_dataset(dataset, folds, cross_fit_parts=2):
    """The labels as int64 if ``dataset`` can be split into ``folds`` and cross-fitted with ``cross_fit_parts``."""
    if not all(hasattr(dataset, name) for name in ("images", "labels")):
        raise ValueError(f"dataset must be an AnomalyDataset (with .images and .labels), got {type(dataset).__name__}")
    images = check_images(dataset.images, "dataset.images")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"dataset.images must be square RGB images of shape (N, 3, S, S), got {tuple(images.shape)}")
    labels = check_labels(dataset.labels, images.shape[0], "dataset.labels")
    check_both_classes(labels, "the dataset")
    check_int(folds, "folds", 2)
    check_int(cross_fit_parts, "cross_fit_parts", 2)
    for label, name in ((0, "normal"), (1, "anomalous")):
        count = int((labels == label).sum())
        if count < folds:
            raise ValueError(f"the dataset has {count} {name} images, fewer than folds={folds}: "
                             f"each fold needs at least one image of each class")
    # The colourisers of the fold with the largest test part see the fewest training normals.
    normals, needed = int((labels == 0).sum()), fewest_to_split(folds, fewest_normals_to_cross_fit(cross_fit_parts))
    if normals < needed:
        raise ValueError(f"the dataset has {normals} normal images; folds={folds} with "
                         f"cross_fit_parts={cross_fit_parts} needs at least {needed}, so that every fold's training "
                         f"part can be cross-fitted (lower folds or cross_fit_parts, or add normal images)")
    return labels


# Folds: repeats x k stratified splits, each with its own colour anomaly maps ---------------------------------
@dataclass
class Fold:
    """One fold of one repeat of a stratified k-fold split, with the colour anomaly maps made for it.

    ``anomaly_maps`` (N, H, W) are the CIEDE2000 maps of ALL images of the dataset, made by the
    fold's own colourisers (trained on its training normals only); ``scale`` is ``map_scale`` of
    the training images' maps; ``scaled_maps`` (N, 1, H, W) is what the networks read;
    ``dataset_fingerprint`` names the images and labels they were made for (``fingerprint``), and
    ``map_source`` the maps (``lea_tiny.protocol.MAP_SOURCES``; "colorization": the colour anomaly map).
    """
    number: int
    train_index: np.ndarray
    test_index: np.ndarray
    anomaly_maps: torch.Tensor
    scale: float
    scaled_maps: torch.Tensor = field(repr=False)
    repeat: int = 0
    dataset_fingerprint: str = ""
    map_source: str = "colorization"


def split_seed(seed, repeat):
    """The ``random_state`` of repeat ``repeat``'s StratifiedKFold."""
    return seed + 10_000 * repeat


def fold_seed(seed, fold_number, repeat=0):
    """The seed of one fold's colourisers, model initialisation and batch order."""
    # The colourisers of one fold use seed .. seed + cross_fit_parts, so a stride of 100 keeps folds
    # apart (and 10,000 repeats).
    return split_seed(seed, repeat) + 100 * fold_number


def fingerprint(dataset):
    """A short hash of the images and labels: folds made for one data set are refused for another."""
    digest = hashlib.sha256(dataset.images.contiguous().numpy().tobytes())
    digest.update(torch.as_tensor(dataset.labels).numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def _saved_maps(path, settings):
    """The anomaly maps saved at ``path`` if they were made with ``settings``, else None."""
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    return saved["anomaly_maps"] if saved.get("settings") == settings else None


def prepare_folds(dataset, folds=5, seed=0, colorizer_epochs=PAPER.colorizer_epochs, cross_fit_parts=2, device=None,
                  progress=True, repeats=1, cache_dir=None, map_source="colorization"):
    """Split ``dataset`` ``repeats`` times into stratified folds and make each fold's maps; return [Fold].

    Repeat r splits with ``StratifiedKFold(folds, shuffle=True, random_state=seed + 10000 r)``
    (repeat 0 is the single split of the paper's protocol). In each fold the colourisers learn from
    the training normals only (``fold_anomaly_maps`` with ``cross_fit_parts`` parts), and the scale is
    measured on the training maps. The colouriser part is the same for every variant, so
    ``cross_validate`` and ``run_ablation`` take these folds and reuse them. With ``cache_dir`` each
    fold's maps are saved there as soon as they are made, and maps saved for the same data set, split
    and colouriser settings are loaded instead of trained again (this is how a run resumes).
    ``map_source`` names the maps (``lea_tiny.protocol.MAP_SOURCES``): the colour anomaly map, or
    the reconstruction map of autoencoders trained the same way (``colorizer_epochs`` each).
    """
    labels = _check_dataset(dataset, folds, cross_fit_parts)
    check_int(colorizer_epochs, "colorizer_epochs", 1)
    check_int(cross_fit_parts, "cross_fit_parts", 2)
    check_int(repeats, "repeats", 1)
    if map_source not in MAP_SOURCES:
        raise ValueError(f"map_source must be one of {', '.join(map(repr, MAP_SOURCES))}, got {map_source!r}")
    dataset_fingerprint = fingerprint(dataset)
    splits = [(repeat, number, train_index, test_index) for repeat in range(repeats)
              for number, (train_index, test_index) in enumerate(
                  StratifiedKFold(n_splits=folds, shuffle=True, random_state=split_seed(seed, repeat))
                  .split(np.zeros(len(labels)), labels.numpy()))]
    prepared = []
    for repeat, number, train_index, test_index in tqdm(splits, desc=f"{map_source} maps per fold",
                                                        disable=not progress):
        train = torch.from_numpy(train_index)
        settings = dict(dataset=dataset_fingerprint, folds=folds, repeat=repeat, fold=number, seed=seed,
                        colorizer_epochs=colorizer_epochs, cross_fit_parts=cross_fit_parts, map_source=map_source)
        path = Path(cache_dir) / f"repeat{repeat}_fold{number}.pt" if cache_dir is not None else None
        maps = _saved_maps(path, settings) if path is not None else None
        if maps is None:
            maps = MAP_SOURCES[map_source].fold_maps(dataset.images, labels, train, epochs=colorizer_epochs,
                                                     cross_fit_parts=cross_fit_parts,
                                                     seed=fold_seed(seed, number, repeat), device=device)
            if path is not None:
                write_atomically(path, lambda file: torch.save(dict(settings=settings, anomaly_maps=maps.cpu()), file))
        maps = maps.to(dataset.images.device)
        scale = map_scale(maps[train.to(maps.device)])
        prepared.append(Fold(number, train_index, test_index, maps, scale, scale_maps(maps, scale), repeat,
                             dataset_fingerprint, map_source))
    return prepared


def protocol_folds(dataset, protocol, device=None, progress=True, cache_dir=None):
    """``prepare_folds`` with the folds, repeats, seed and map settings of ``protocol``."""
    return prepare_folds(dataset, protocol.folds, protocol.seed, protocol.colorizer_epochs, protocol.cross_fit_parts,
                         device, progress, protocol.repeats, cache_dir=cache_dir, map_source=protocol.map_source)


def _check_fold_maps(fold_maps, dataset, folds, repeats, map_source="colorization"):
    if not isinstance(fold_maps, (list, tuple)) or not all(isinstance(fold, Fold) for fold in fold_maps):
        raise ValueError("fold_maps must be the list of folds returned by prepare_folds")
    if len(fold_maps) != folds * repeats:
        raise ValueError(f"fold_maps holds {len(fold_maps)} folds but folds={folds} x repeats={repeats} "
                         f"= {folds * repeats}")
    if any(fold.scaled_maps.shape[0] != len(dataset.labels) for fold in fold_maps):
        raise ValueError("fold_maps were prepared for a dataset of another size")
    dataset_fingerprint = fingerprint(dataset)
    if any(fold.dataset_fingerprint not in ("", dataset_fingerprint) for fold in fold_maps):
        raise ValueError("fold_maps were prepared for another dataset (other images or labels): "
                         "make them with prepare_folds(dataset, ...) for this one")
    if any(fold.map_source != map_source for fold in fold_maps):
        raise ValueError(f"fold_maps hold {fold_maps[0].map_source} maps but the protocol's map_source is "
                         f"{map_source!r}: make them with prepare_folds(..., map_source={map_source!r})")


# One variant over every fold ---------------------------------------------------------------------------------
def _count_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


def cross_validate(variant, dataset, protocol=PAPER, attention_point=None, *, device=None, progress=True,
                   fold_maps=None, on_fold_end=None, **changes):
    """Stratified k-fold cross-validation of one variant, ``protocol.repeats`` times; returns a CrossValidation.

    ``changes`` are protocol settings for this call: ``cross_validate("baseline", data, adn="cnn",
    folds=3)`` is ``cross_validate("baseline", data, PAPER.replace(adn="cnn", folds=3))``.
    Each fold: a fresh ``make_model(variant, adn, attention_point, image_size)`` (initialised from
    the fold's seed), ``fit`` on the training part (with the protocol's epochs, batches, learning
    rate and augmentation), ``evaluate`` on the test part. ``fold_maps`` from ``prepare_folds``
    (same dataset, folds and repeats) skips the colourisers; without it they are trained here. The
    protocol's seed seeds each fold's model initialisation and batch order, and the splits when the
    folds are made here. Same seed, same numbers on the CPU. ``on_fold_end(result, fold, model)``,
    if given, is called after each fold is evaluated (the demo keeps fold 0's trained model this way
    to draw its attention).
    """
    protocol = protocol.replace(**changes)
    labels = _check_dataset(dataset, protocol.folds, protocol.cross_fit_parts)
    image_size = dataset.images.shape[-1]
    # Build one model before any training so that a bad variant or point fails at once.
    params = _count_parameters(_model(variant, attention_point, protocol, image_size))
    if fold_maps is None:
        fold_maps = protocol_folds(dataset, protocol, device, progress)
    _check_fold_maps(fold_maps, dataset, protocol.folds, protocol.repeats, protocol.map_source)

    result = CrossValidation(variant, protocol.adn, attention_point, params, folds=[])
    description = result.label + (f" at point {attention_point}" if attention_point else "")
    for fold in tqdm(fold_maps, desc=description, disable=not progress, leave=False):
        model, history = _trained_model(variant, attention_point, dataset, fold, fold.train_index, protocol, device,
                                        progress)
        test = torch.from_numpy(fold.test_index)
        metrics = evaluate(model, dataset.images[test], fold.scaled_maps[test], labels[test], device=device)
        record = dict(repeat=fold.repeat, fold=fold.number, n_train=len(fold.train_index), n_test=len(test),
                      history=history)
        record.update({name: value for name, value in metrics.items() if not name.endswith("scores")})
        if model.gates is not None:  # the learnt w_p, reported as the follow-up reports them
            record["gate_weights"] = {str(point): weight for point, weight in model.gate_weights().items()}
        result.folds.append(record)
        if on_fold_end is not None:
            on_fold_end(result, fold, model)
    return result


def _trained_model(variant, attention_point, dataset, fold, train_index, protocol, device, progress=False):
    """(model, losses per epoch): made from the fold's seed and trained on ``train_index``, as every row's folds are."""
    seed = fold_seed(protocol.seed, fold.number, fold.repeat)
    seed_everything(seed)
    model = _model(variant, attention_point, protocol, dataset.images.shape[-1])
    train = torch.as_tensor(train_index)
    data = (dataset.images[train], fold.scaled_maps[train], torch.as_tensor(dataset.labels)[train])
    options = dict(epochs=protocol.epochs, lr=protocol.lr, batch_size=protocol.batch_size, augment=protocol.augment,
                   device=device, seed=seed, progress=progress)
    if protocol.caan_training == "joint" or model.caan is None:
        return model, fit(model, *data, **options)
    stages = fit_two_stage(model, *data, caan=protocol.caan_training, caan_epochs=protocol.epochs, **options)
    return model, dict(stages["stage_two"], caan_alone_loss=stages["stage_one"]["caan_loss"])


def _model(variant, attention_point, protocol, image_size):
    """``make_model`` for one row; the protocol's gate goes to the variants that have attention."""
    return make_model(variant, adn=protocol.adn, attention_point=attention_point, image_size=image_size,
                      gate=protocol.gate and variant in ATTENTION_VARIANTS)


# The map alone, and a fairly chosen attention point ---------------------------------------------------------
def best_f1_threshold(scores, labels):
    """The score threshold at which the anomalous class's F1 on (``scores``, ``labels``) is highest."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def map_alone(dataset, fold_maps, adn="resnet18"):
    """The colour anomaly map as a detector with no training: ``image_score`` of each test image's map.

    AUROC needs no threshold; for F1 the threshold is the one with the best F1 on the fold's training
    images (their maps are cross-fitted, so they are what an unseen image's map looks like). ``adn``
    only names the table the row belongs to.
    """
    labels = torch.as_tensor(dataset.labels)
    result = CrossValidation("map_alone", adn, None, 0, folds=[])
    for fold in fold_maps:
        scores = image_score(fold.anomaly_maps).cpu().numpy()
        train, test = fold.train_index, fold.test_index
        threshold = best_f1_threshold(scores[train], labels[train].numpy())
        metrics = f1_and_auroc(torch.from_numpy(scores[test]), labels[test], threshold)
        result.folds.append(dict(repeat=fold.repeat, fold=fold.number, n_train=len(train), n_test=len(test),
                                 threshold=threshold, **metrics))
    return result


def choose_point(variant, dataset, fold, points=ATTENTION_POINTS, protocol=PAPER, *, device=None, **changes):
    """The attention point with the best validation AUROC inside ``fold``'s training part; (point, {point: AUROC}).

    A stratified third of the training part is held out (``train_test_split``, seeded by the fold);
    the variant is trained at each point on the rest, exactly as ``cross_validate`` trains it (with
    ``protocol`` and its ``changes``), and scored on the held-out third. No test image is looked at.
    AUROC rather than F1 because on a validation third of a small fold F1 at 0.5 takes only a few
    values; the first of equal AUROCs wins.
    """
    protocol = protocol.replace(**changes)
    labels = torch.as_tensor(dataset.labels)
    train = fold.train_index
    inner_train, validation = train_test_split(train, test_size=VALIDATION_FRACTION, stratify=labels[train].numpy(),
                                               random_state=fold_seed(protocol.seed, fold.number, fold.repeat))
    validation = torch.from_numpy(validation)
    aurocs = {}
    for point in points:
        model, _ = _trained_model(variant, point, dataset, fold, inner_train, protocol, device)
        aurocs[point] = evaluate(model, dataset.images[validation], fold.scaled_maps[validation], labels[validation],
                                 device=device)["auroc"]
    return max(aurocs, key=aurocs.get), aurocs


def fair_point_row(results_by_point, chosen):
    """The row whose fold (repeat, fold) is taken from the point ``chosen[(repeat, fold)]``.

    ``results_by_point`` maps point -> CrossValidation of one variant; since ``cross_validate`` trains
    a fold at a point the same way whoever asks, the chosen point's fold is reused, not retrained.
    """
    first = next(iter(results_by_point.values()))
    folds = []
    for index, fold in enumerate(first.folds):
        point, aurocs = chosen[(fold["repeat"], fold["fold"])]
        folds.append(dict(results_by_point[point].folds[index], attention_point=point,
                          validation_auroc={point_text(p): auroc for p, auroc in aurocs.items()}))
    return CrossValidation(first.variant, first.adn, None, first.params, folds)


# All of it for one ADN ----------------------------------------------------------------------------------------
def _planned_runs(dataset, protocol):
    """(variant, point) for every cross-validation, each model built once so that bad settings fail now."""
    runs = [(variant, point if variant in ATTENTION_VARIANTS else None) for variant in protocol.variants
            for point in (protocol.attention_points if variant in ATTENTION_VARIANTS else (None,))]
    for variant, point in runs:
        _model(variant, point, protocol, dataset.images.shape[-1])
    return runs


def _finished_results(out_dir, config):
    """The run saved in ``out_dir``: ({(variant, attention_point): CrossValidation}, its date), refused if its
    configuration differs."""
    if not (Path(out_dir) / "results.json").is_file():
        return {}, None
    saved = load_results(out_dir)
    check_same_configuration(out_dir, saved.config, config)
    return ({(result.variant, result.attention_point): result for result in saved.results
             if result.variant != "map_alone"}, saved.environment.get("date"))


def run_ablation(dataset, protocol=PAPER, *, out_dir=None, device=None, progress=True, fold_maps=None, resume=False,
                 on_fold_end=None, **changes):
    """Table 3 for one ADN: the map alone, then every variant, each attention variant at every point.

    ``protocol`` (``lea_tiny.protocol``: PAPER by default, or TEACHING) says what is trained and
    how; ``changes`` are settings for this call (``run_ablation(data, adn="cnn", folds=3)``).
    The colourisers are trained once per fold of every repeat (``prepare_folds``, or pass
    ``fold_maps``) and shared by all variants, so every row is measured on the same folds and maps.
    With several attention points (or ``choose_points=True``) each attention variant also gets the
    row whose point ``choose_point`` picks on validation data inside each training part.
    With ``out_dir`` nothing finished is lost: each fold's maps are saved in ``out_dir/fold_maps`` as
    they are made, and the table after every finished cross-validation (``AblationTable.save``).
    ``resume=True`` continues the run saved in ``out_dir``: saved maps and finished cross-validations
    are kept, the rest is run; a run saved with another configuration is refused. Since every
    cross-validation seeds itself, a resumed run ends with the table an uninterrupted one gives.
    ``on_fold_end`` goes to ``cross_validate``. Returns an AblationTable; print it for the table.
    """
    protocol = protocol.replace(**changes)
    labels = _check_dataset(dataset, protocol.folds, protocol.cross_fit_parts)
    runs = _planned_runs(dataset, protocol)
    check_bool(resume, "resume")
    config = dict(dataset=getattr(dataset, "name", "?"), n_normal=int((labels == 0).sum()),
                  n_anomalous=int((labels == 1).sum()), image_size=dataset.images.shape[-1],
                  **protocol.as_config(), dataset_fingerprint=fingerprint(dataset))
    check_out_dir(out_dir, resume)
    done, started = _finished_results(out_dir, config) if resume else ({}, None)
    if done:
        print(f"resuming {out_dir}: {len(done)} finished cross-validation(s) kept")
    if fold_maps is None:
        fold_maps = protocol_folds(dataset, protocol, device, progress,
                                   cache_dir=Path(out_dir) / "fold_maps" if out_dir is not None else None)
    _check_fold_maps(fold_maps, dataset, protocol.folds, protocol.repeats, protocol.map_source)
    environment = run_environment(device) | ({"resumed_a_run_started": started} if started else {})
    table = AblationTable([map_alone(dataset, fold_maps, protocol.adn)], config, environment, fold_maps)
    options = dict(device=device, fold_maps=fold_maps)

    def finished(key, run):
        table.results.append(done[key] if key in done else run())
        if out_dir is not None:
            table.save(out_dir)

    for variant, point in tqdm(runs, desc=f"ablation ({ADN_NAMES[protocol.adn].label})", disable=not progress):
        finished((variant, point), lambda: cross_validate(variant, dataset, protocol, point, progress=progress,
                                                          on_fold_end=on_fold_end, **options))
        if protocol.chooses_points and variant in ATTENTION_VARIANTS and point == protocol.attention_points[-1]:
            by_point = {result.attention_point: result for result in table.results if result.variant == variant}
            finished((variant, None), lambda: fair_point_row(by_point, {
                (fold.repeat, fold.number): choose_point(variant, dataset, fold, protocol.attention_points, protocol,
                                                         device=device) for fold in fold_maps}))
    return table
