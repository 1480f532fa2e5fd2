"""LEA-Net and its relatives in one table (chapters 11-14): every method and its key ablation, on the same folds.

``METHODS`` names each row: a ``train`` function of the common interface (``lea_tiny.detector``) and
its options. ``compare`` cross-validates them all on the same folds (``stratified_splits``), so that
``paired_difference`` pairs any two rows fold by fold, and saves as it goes; ``table`` prints them as
Markdown, each row beside its paired difference to a reference row, in image AUROC and, where both
localise, pixel AUROC.

The run saved in ``results/relatives`` (loaded by the chapters) was made by::

    python -c "from lea_tiny.relatives import main; main()"

and an interrupted one continues with ``main(resume=True)``.
"""

import statistics
import time
from pathlib import Path

import torch

from lea_tiny import agpnet, atacnet, cavga, detector
from lea_tiny.ablation import fingerprint
from lea_tiny.checks import check_bool
from lea_tiny.data import make_dataset
from lea_tiny.detector import said
from lea_tiny.saved_runs import check_out_dir, run_environment
from lea_tiny.train import write_atomically

BASELINE, LEA_NET = "baseline (CNN)", "LEA-Net (CNN + MobileNet CAAN, point 2)"
METHODS = {
    BASELINE: (detector.train, dict(variant="baseline")),
    LEA_NET: (detector.train, {}),
    "CAVGA": (cavga.train, {}),
    "CAVGA without L_ae": (cavga.train, dict(attention_loss=False)),
    "CAVGA weakly supervised": (cavga.train, dict(weakly_supervised=True)),
    "CAVGA weakly supervised without L_cga": (cavga.train, dict(weakly_supervised=True, attention_loss=False)),
    "AGPNet": (agpnet.train, {}),
    "AGPNet, uniform noise": (agpnet.train, dict(noise="uniform")),
    "AGPNet, colour-map noise": (agpnet.train, dict(noise="colour")),
    "ATAC-Net": (atacnet.train, {}),
    "ATAC-Net without zoom": (atacnet.train, dict(zoom=False)),
}
# The command line's names for each method, with the rows of its key ablation.
FAMILIES = {"baseline": (BASELINE,), "lea_net": (LEA_NET,),
            **{family: tuple(name for name in METHODS if name.startswith(prefix))
               for family, prefix in (("cavga", "CAVGA"), ("agpnet", "AGPNet"), ("atacnet", "ATAC-Net"))}}
# The saved run: the teaching configuration of chapters 7-8 (32 px, 90 + 30 images, 3 folds x 3 repeats).
SAVED_RUN = dict(data="retina", image_size=32, n_normal=90, n_anomalous=30, folds=3, repeats=3, epochs=20, seed=0)


def compare(dataset, methods=METHODS, *, folds=3, repeats=1, epochs, seed=0, device=None, progress=False,
            out_dir=None, resume=False):
    """Every method of ``methods`` ({name: (train, options)}) cross-validated on one split: a list of rows.

    With ``out_dir`` nothing finished is lost: ``results.json`` (``save_comparison``) and ``results.md``
    (``table``) are written there after every method. ``resume=True`` continues the run saved in
    ``out_dir``: its finished methods are kept and the rest is trained; a run saved with another
    configuration is refused. Each method seeds its folds itself, so a resumed run ends with the rows
    of an uninterrupted one.
    """
    started = time.perf_counter()
    labels = torch.as_tensor(dataset.labels)
    splits = detector.stratified_splits(labels, folds, seed, repeats)
    check_bool(resume, "resume")
    config = dict(data=getattr(dataset, "name", "?"), image_size=dataset.images.shape[-1],
                  n_normal=int((labels == 0).sum()), n_anomalous=int((labels == 1).sum()), folds=folds,
                  repeats=repeats, epochs=epochs, seed=seed, methods=list(methods),
                  dataset_fingerprint=fingerprint(dataset))
    check_out_dir(out_dir, resume)
    saved_rows, saved_config = detector.saved_comparison(out_dir, config) if resume else ({}, {})
    if saved_rows:
        print(f"resuming {out_dir}: {len(saved_rows)} finished method(s) kept")
    environment = run_environment(device)
    if saved_config:
        environment["resumed_a_run_started"] = saved_config["environment"]["date"]
    rows = []
    for name, (train, options) in methods.items():
        rows.append(saved_rows[name] if name in saved_rows else detector.cross_validate_method(
            train, dataset, splits, name=name, epochs=epochs, seed=seed, device=device, progress=progress, **options))
        if out_dir is not None:
            minutes = saved_config.get("minutes", 0) + (time.perf_counter() - started) / 60  # wall, resumed run's too
            detector.save_comparison(rows, Path(out_dir) / "results.json",
                                     dict(config, environment=environment, minutes=minutes))
            write_atomically(Path(out_dir) / "results.md", lambda file: file.write((table(rows) + "\n").encode()))
    return rows


def _localises(row):
    return "pixel_auroc" in row.folds[0]


def choose_pixel_reference(rows):
    """The row whose pixel AUROC the others are compared with: LEA-Net (its colour anomaly map) when it is
    among ``rows``, else the first row that localises; None when none does (or the data set has no masks)."""
    localising = [row.label for row in rows if _localises(row)]
    return LEA_NET if LEA_NET in localising else next(iter(localising), None)


def _cell(result, reference, metric):
    if reference is None or metric not in result.folds[0]:
        return "-"
    return "(reference)" if result is reference else said(result, reference, metric)


def _mean_std(row):
    return f"{row.mean['auroc']:.3f} ± {row.std['auroc']:.3f}"


def table(rows, reference=None, pixel_reference=None):
    """Markdown: mean ± std of image and pixel AUROC per row, and each row minus a reference with its 95 % interval.

    ``reference`` names the row image AUROC is compared with (default: the baseline if it is among
    ``rows``, else the first row); ``pixel_reference`` the row pixel AUROC is compared with, which must
    localise (default: ``choose_pixel_reference(rows)``). A line under the table names both.
    """
    by_name = {row.label: row for row in rows}
    reference = by_name[reference or (BASELINE if BASELINE in by_name else rows[0].label)]
    pixel_reference = pixel_reference or choose_pixel_reference(rows)
    if pixel_reference is not None and not _localises(by_name[pixel_reference]):
        raise ValueError(f"the pixel reference {pixel_reference!r} has no pixel AUROC (no map, or no masks)")
    pixel = by_name.get(pixel_reference)
    lines = ["| method | image AUROC | image AUROC - reference [95 % CI] | pixel AUROC | "
             "pixel AUROC - pixel reference [95 % CI] | training s / fold (median) |", "| --- | --- | --- | --- | --- | ---: |"]
    for row in rows:
        seconds = statistics.median(fold["seconds"] for fold in row.folds)  # robust to a busy machine
        lines.append(f"| {row.label} | {_mean_std(row)} | {_cell(row, reference, 'auroc')} | "
                     f"{_mean_std(row.on('pixel_auroc')) if _localises(row) else '-'} | "
                     f"{_cell(row, pixel, 'pixel_auroc')} | {seconds:.1f} |")
    pixel_said = pixel_reference if pixel else "none, since no row has a pixel AUROC (no map, or no masks)"
    return "\n".join(lines + ["", f"Reference: {reference.label}. Pixel reference: {pixel_said}."])


def main(out_dir="results/relatives", config=SAVED_RUN, resume=False):
    """Make the saved run: ``config``'s data set, every method of ``METHODS``, saved in ``out_dir`` as it goes."""
    dataset = make_dataset(config["data"], config["n_normal"], config["n_anomalous"], config["image_size"],
                           config["seed"])
    rows = compare(dataset, folds=config["folds"], repeats=config["repeats"], epochs=config["epochs"],
                   seed=config["seed"], progress=True, out_dir=out_dir, resume=resume)
    print(table(rows))


def show_maps(images, masks, maps):
    """One row per image: the image, its true mask, each map of ``maps`` ({title: (N, H, W)}) on its own scale."""
    import matplotlib.pyplot as plt

    columns = 2 + len(maps)
    figure, axes = plt.subplots(len(images), columns, figsize=(1.7 * columns, 1.7 * len(images)), squeeze=False,
                                layout="constrained")
    for row, image in enumerate(images):
        panels = [("image", image.permute(1, 2, 0)), ("true mask", masks[row])]
        panels += [(title, values[row]) for title, values in maps.items()]
        for axis, (title, panel) in zip(axes[row], panels):
            axis.imshow(panel, cmap=None if panel.ndim == 3 else "magma")
            axis.set_axis_off()
            if row == 0:
                axis.set_title(title, fontsize=8)
    return figure
