"""Beyond the paper (chapter 15): the follow-ups' ideas, and where attention should go, on the same folds.

The authors' group followed LEA-Net up twice (Hayakawa et al., "Layer-wise External Attention for
Efficient Deep Anomaly Detection", IMPROVE 2023; Nakanishi et al., "Layer-Wise External Attention
by Well-Localized Attention Map for Efficient Deep Anomaly Detection", SN Computer Science 2024).
Their ideas are settings of ``lea_tiny.protocol.Protocol``; this module measures them as rows of
one table, each a LEA-Net trained with one change, all on the same folds and maps, so that any two
rows pair fold by fold (``paired_difference``):

    IDEAS    the paper's LEA-Net; with the learnable gate; at points 1 and 3 at once, plain and
             gated; on an autoencoder's reconstruction map; the CAAN trained first, then frozen
             or fine-tuned. Each against the baseline and against the paper's LEA-Net.
    WHERE    the 2024 follow-up's question: does attention at a shallow point need to know *where*
             the anomaly is, and at a deep point only *how much* of it there is? LEA-Net at points
             1, 3 and 5, reading the map as made, a map with the where removed, and a map with the
             how much removed (``MAP_TREATMENTS``).

The two treatments are lea_tiny's operationalisation (the follow-up's own construction is not known):
- "flat": every pixel set to the map's image score (the mean of its hottest 1 %, chapter 4). It is
  the limit of blurring: nothing is left of where, and what is kept is the how-much that the map
  alone detects anomalies by (the mean would dilute a small lesion into the healthy rest).
- "normalised": each map divided by its own maximum, so every image's hottest pixel reads 1: the
  map still points at its hottest region, but a normal image's hottest noise looks as strong as a
  lesion. Nothing is left of how much.

Read top to bottom:
    Row, IDEAS, WHERE         what each row trains, declared once
    MAP_TREATMENTS            the map as made, flat, normalised
    run_rows                  every row cross-validated on the same folds, saved as it goes, resumable
    table, where_table        the rows with paired 95 % intervals
    main                      the saved runs of ``results/beyond`` and ``results/where_attention``
"""

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lea_tiny.ablation import cross_validate, protocol_folds
from lea_tiny.attention import VARIANTS
from lea_tiny.checks import check_bool
from lea_tiny.data import make_dataset
from lea_tiny.detector import MethodCrossValidation, said, save_comparison, saved_comparison
from lea_tiny.maps import image_score
from lea_tiny.protocol import TEACHING, TEACHING_DATA
from lea_tiny.saved_runs import check_out_dir, run_environment


@dataclass(frozen=True)
class Row:
    """One row: ``variant`` at ``attention_point``, trained with the protocol ``changes``, reading treated maps."""
    variant: str
    attention_point: int | tuple | None = None
    changes: dict = field(default_factory=dict)
    map_treatment: str = "as made"


# Every idea is LEA-Net at the teaching protocol's point (3) with one change, or two where they combine.
PAPER_POINT = TEACHING.attention_points[0]
BASELINE, LEA_NET = "baseline (CNN)", f"LEA-Net (MobileNet CAAN, point {PAPER_POINT})"
IDEAS = {
    BASELINE: Row("baseline"),
    LEA_NET: Row("caan_mobilenet", PAPER_POINT),
    "+ learnable gate": Row("caan_mobilenet", PAPER_POINT, dict(gate=True)),
    "at points 1 and 3": Row("caan_mobilenet", (1, 3)),
    "at points 1 and 3, gated": Row("caan_mobilenet", (1, 3), dict(gate=True)),
    "on the autoencoder's map": Row("caan_mobilenet", PAPER_POINT, dict(map_source="autoencoder")),
    "CAAN first, then frozen": Row("caan_mobilenet", PAPER_POINT, dict(caan_training="frozen")),
    "CAAN first, then fine-tuned": Row("caan_mobilenet", PAPER_POINT, dict(caan_training="fine_tune")),
}


# The map with its where or its how-much taken out -----------------------------------------------------------
def flat(scaled_maps):
    """(N, 1, H, W) -> every pixel of each map at its image score: no where, the how-much kept."""
    return image_score(scaled_maps).view(-1, 1, 1, 1).expand_as(scaled_maps).clone()


def normalised(scaled_maps):
    """(N, 1, H, W) -> each map over its own maximum (an all-zero map stays 0): the where kept, no how-much."""
    return scaled_maps / scaled_maps.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


MAP_TREATMENTS = {"as made": lambda scaled_maps: scaled_maps, "flat": flat, "normalised": normalised}
# A shallow, a middle and a deep point: every point of all three maps would take 5/3 as long.
WHERE_POINTS = (1, 3, 5)
WHERE = {f"point {point}, {treatment} map": Row("caan_mobilenet", point, map_treatment=treatment)
         for point in WHERE_POINTS for treatment in MAP_TREATMENTS}


def _check_rows(rows):
    for name, row in rows.items():
        if not isinstance(row, Row) or row.variant not in VARIANTS or row.map_treatment not in MAP_TREATMENTS:
            raise ValueError(f"row {name!r} must be a Row of a known variant and map treatment "
                             f"({', '.join(MAP_TREATMENTS)}), got {row!r}")
        TEACHING.replace(**row.changes)  # an unknown or bad setting is named now, not after hours


# Every row on the same folds ---------------------------------------------------------------------------------
def _folds_for(dataset, protocol, row, prepared, cache, device, progress):
    """The folds ``row`` reads: its map source's folds (made once, cached), its treatment applied."""
    row_protocol = protocol.replace(**row.changes)
    source = row_protocol.map_source
    if source not in prepared:
        prepared[source] = protocol_folds(dataset, row_protocol, device, progress,
                                          cache_dir=None if cache is None else cache / source)
    treat = MAP_TREATMENTS[row.map_treatment]
    return [dataclasses.replace(fold, scaled_maps=treat(fold.scaled_maps)) for fold in prepared[source]]


def _config(dataset, protocol, rows):
    labels = torch.as_tensor(dataset.labels)
    return json.loads(json.dumps(dict(
        dataset=getattr(dataset, "name", "?"), n_normal=int((labels == 0).sum()), n_anomalous=int((labels == 1).sum()),
        image_size=dataset.images.shape[-1], protocol=protocol.as_config(),
        rows={name: dataclasses.asdict(row) for name, row in rows.items()})))


def run_rows(dataset, rows=IDEAS, protocol=TEACHING, *, out_dir=None, resume=False, device=None, progress=True,
             maps_dir=None):
    """Every row of ``rows`` ({name: Row}) cross-validated with ``protocol`` on the same folds: [MethodCrossValidation].

    Rows with the same map source share the folds' maps (made once per fold, saved in
    ``maps_dir/<source>``, by default ``out_dir/fold_maps/<source>``); each row then trains as
    ``cross_validate`` trains a variant, seeded per fold, so rows pair fold by fold. With ``out_dir``
    the rows are saved to ``out_dir/results.json`` after each one; ``resume=True`` keeps the rows a
    run with the same configuration saved there, and runs the rest.
    """
    _check_rows(rows)
    check_bool(resume, "resume")
    check_out_dir(out_dir, resume)
    out_dir = None if out_dir is None else Path(out_dir)
    maps_dir = Path(maps_dir) if maps_dir is not None else None if out_dir is None else out_dir / "fold_maps"
    config = _config(dataset, protocol, rows)
    done = saved_comparison(out_dir, config)[0] if resume else {}
    prepared, started, measured = {}, time.perf_counter(), []
    for name, row in rows.items():
        if name not in done:
            folds = _folds_for(dataset, protocol, row, prepared, maps_dir, device, progress)
            result = cross_validate(row.variant, dataset, protocol.replace(**row.changes), row.attention_point,
                                    device=device, progress=progress, fold_maps=folds)
            done[name] = MethodCrossValidation(name, result.adn, result.attention_point, result.params, result.folds)
        measured.append(done[name])
        if out_dir is not None:
            save_comparison(measured, out_dir / "results.json",
                            dict(config, environment=run_environment(device), minutes=(time.perf_counter() - started) / 60))
    return measured


# The tables ------------------------------------------------------------------------------------------------
def _mean_std(row):
    return f"{row.mean['auroc']:.3f} ± {row.std['auroc']:.3f}"


def _difference(row, reference):
    return "(reference)" if row is reference else said(row, reference)


def table(rows, references=(BASELINE, LEA_NET)):
    """Markdown: each row's held-out AUROC and its paired difference to each of ``references``, with 95 % intervals."""
    by_name = {row.label: row for row in rows}
    lines = ["| row | AUROC | " + " | ".join(f"AUROC - {name} [95 % CI]" for name in references) + " |",
             "| --- | --- |" + " --- |" * len(references)]
    for row in rows:
        cells = [_difference(row, by_name[name]) for name in references]
        lines.append(f"| {row.label} | {_mean_std(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def where_table(rows):
    """Markdown: per attention point, the AUROC on each map and what removing the where or the how-much costs."""
    by_name = {row.label: row for row in rows}
    missing = [name for name in WHERE if name not in by_name]
    if missing:
        raise ValueError(f"the where-attention table needs every row of WHERE; missing {', '.join(missing)}")
    treatments = [treatment for treatment in MAP_TREATMENTS if treatment != "as made"]
    lines = ["| point | " + " | ".join(f"AUROC, {treatment} map" for treatment in MAP_TREATMENTS) + " | "
             + " | ".join(f"as made - {treatment} [95 % CI]" for treatment in treatments) + " |",
             "| --- |" + " --- |" * (len(MAP_TREATMENTS) + len(treatments))]
    for point in WHERE_POINTS:
        cells = {treatment: by_name[f"point {point}, {treatment} map"] for treatment in MAP_TREATMENTS}
        lines.append(f"| {point} | " + " | ".join(_mean_std(row) for row in cells.values()) + " | "
                     + " | ".join(_difference(cells["as made"], cells[treatment]) for treatment in treatments) + " |")
    return "\n".join(lines)


# The saved runs: the teaching data and protocol of chapters 7-8, 3 folds x 2 repeats (an hour of a 2-core CPU)
SAVED_PROTOCOL = TEACHING.replace(repeats=2)


def main(which="beyond", out_dir=None):
    """Make the saved run ``which`` ("beyond": IDEAS, or "where_attention": WHERE) in ``results/<which>``."""
    rows = {"beyond": IDEAS, "where_attention": WHERE}[which]
    dataset = make_dataset("retina", **TEACHING_DATA, seed=SAVED_PROTOCOL.seed)
    # both runs read the same folds' maps, so they are made once (results/fold_maps is not kept in git)
    measured = run_rows(dataset, rows, SAVED_PROTOCOL, out_dir=out_dir or Path("results") / which, resume=True,
                        maps_dir=Path("results") / "fold_maps")
    print(table(measured) if which == "beyond" else where_table(measured))
