"""LEA-Net and its relatives in one table (chapters 11-14): every method and its key ablation, on the same folds.

``METHODS`` names each row: a ``train`` function of the common interface (``lea_tiny.detector``) and
its options. ``compare`` cross-validates them all on the same folds (``stratified_splits``), so that
``paired_difference`` pairs any two rows fold by fold; ``table`` prints them as Markdown, each row
beside its paired difference to a reference row, in image AUROC and, where both localise, pixel AUROC.

The run saved in ``results/relatives`` (loaded by the chapters) was made by::

    python -c "from lea_tiny.relatives import main; main()"
"""

import statistics
import time

from lea_tiny import agpnet, atacnet, cavga, detector
from lea_tiny.ablation import run_environment
from lea_tiny.compare import paired_difference
from lea_tiny.data import make_dataset

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


def compare(dataset, methods=METHODS, *, folds=3, repeats=1, epochs, seed=0, device=None, progress=False):
    """Every method of ``methods`` ({name: (train, options)}) cross-validated on one split: a list of rows."""
    splits = detector.stratified_splits(dataset.labels, folds, seed, repeats)
    return [detector.cross_validate_method(train, dataset, splits, name=name, epochs=epochs, seed=seed,
                                           device=device, progress=progress, **options)
            for name, (train, options) in methods.items()]


def said(result, reference, metric="auroc"):
    """"+0.012 [-0.034, +0.058] cannot be told apart": ``result`` minus ``reference`` in ``metric``, fold by fold."""
    difference = paired_difference(result.on(metric), reference.on(metric))
    return f"{difference} {difference.verdict}"


def _cell(result, reference, metric):
    if metric not in result.folds[0] or metric not in reference.folds[0]:
        return "-"
    return "(reference)" if result is reference else said(result, reference, metric)


def _mean_std(row):
    return f"{row.mean['auroc']:.3f} ± {row.std['auroc']:.3f}"


def table(rows, reference, pixel_reference):
    """Markdown: mean ± std of image and pixel AUROC per row, and each row minus a reference with its 95 % interval.

    ``reference`` and ``pixel_reference`` name the rows the image and the pixel AUROC are compared with
    (the baseline has no map, so the pixel reference must be a method that localises).
    """
    by_name = {row.label: row for row in rows}
    reference, pixel_reference = by_name[reference], by_name[pixel_reference]
    lines = ["| method | image AUROC | image AUROC - reference [95 % CI] | pixel AUROC | "
             "pixel AUROC - pixel reference [95 % CI] | training s / fold (median) |", "| --- | --- | --- | --- | --- | ---: |"]
    for row in rows:
        pixel = _mean_std(row.on("pixel_auroc")) if "pixel_auroc" in row.folds[0] else "-"
        seconds = statistics.median(fold["seconds"] for fold in row.folds)  # robust to a busy machine
        lines.append(f"| {row.label} | {_mean_std(row)} | {_cell(row, reference, 'auroc')} | {pixel} | "
                     f"{_cell(row, pixel_reference, 'pixel_auroc')} | {seconds:.1f} |")
    return "\n".join(lines)


def main(out="results/relatives/results.json", config=SAVED_RUN):
    """Make the saved run: ``config``'s data set, every method of ``METHODS``, saved to ``out``."""
    started = time.perf_counter()
    dataset = make_dataset(config["data"], config["n_normal"], config["n_anomalous"], config["image_size"],
                           config["seed"])
    rows = compare(dataset, folds=config["folds"], repeats=config["repeats"], epochs=config["epochs"],
                   seed=config["seed"], progress=True)
    detector.save_comparison(rows, out, dict(config, environment=run_environment(None),
                                             minutes=(time.perf_counter() - started) / 60))
    print(table(rows, BASELINE, LEA_NET))


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
