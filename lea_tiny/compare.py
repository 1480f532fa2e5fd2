"""What a cross-validation gives, and how two rows are compared: paired differences with intervals, Table 3.

A ``CrossValidation`` is one row of an ablation: a dict of metrics for every fold of every repeat.
Two rows measured on the same folds (one ``lea_tiny.ablation.prepare_folds``) are compared fold by
fold: ``paired_difference`` gives the mean difference and a 95 % interval; an interval that covers 0
means the two rows cannot be told apart on this data. ``AblationTable`` prints Table 3 with each
row's difference to the baseline, and saves and loads it (``load_results``).

Read top to bottom:
    CrossValidation     one row: per-fold metrics, mean ± std, the CAAN's own head as a row
    paired_difference   mean difference to a reference over the same folds, with its interval
    AblationTable       the rows of Table 3 and their differences to the baseline; save
    load_results        a saved table back from results.json

Where lea_tiny departs from the paper: the paper reports mean ± std of F1 over five folds; the std is
taken here as the population one (``numpy.std``; the paper does not say). Differences are paired and
come with an interval, which the paper does not report.
"""

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from lea_tiny.adn import ADN_NAMES
from lea_tiny.attention import ATTENTION_POINTS, ATTENTION_VARIANTS, VARIANTS, check_attention_point
from lea_tiny.checks import check_int, check_number, is_int
from lea_tiny.protocol import MAP_SOURCES
from lea_tiny.train import write_atomically

METRICS = ("f1", "auroc")
MAP_ALONE_LABEL = "Colour anomaly map alone (no training)"


class _RowLabels(Mapping):
    """Row labels as Table 3 prints them ("{adn} + Direct Attention"), and the map alone's.

    Read from ``lea_tiny.attention.VARIANTS`` each time, so that a newly declared variant has its label.
    """

    def __getitem__(self, variant):
        return MAP_ALONE_LABEL if variant == "map_alone" else VARIANTS[variant].label

    def __iter__(self):
        return iter(("map_alone", *VARIANTS))

    def __len__(self):
        return 1 + len(VARIANTS)


VARIANT_LABELS = _RowLabels()
CAAN_HEAD_LABEL = "its CAAN's own head (reads the map only)"


@dataclass
class CrossValidation:
    """One row's cross-validation: ``folds`` holds a dict per fold of every repeat (f1, auroc, ...).

    ``attention_point`` is the point the row was trained at (a tuple for several); None for rows without attention, and
    for an attention row whose point ``choose_point`` chose per fold (each fold dict then says which).
    """
    variant: str
    adn: str
    attention_point: int | tuple | None
    params: int
    folds: list

    @property
    def label(self):
        """The row label of Table 3, e.g. "ResNet18 + MobileNet-small CAAN"."""
        return VARIANT_LABELS[self.variant].format(adn=ADN_NAMES[self.adn].label)

    @property
    def mean(self):
        return {metric: float(np.mean([fold[metric] for fold in self.folds])) for metric in METRICS}

    @property
    def std(self):
        return {metric: float(np.std([fold[metric] for fold in self.folds])) for metric in METRICS}

    def caan_head(self):
        """The CAAN's own head as a row of its own: its F1 and AUROC on the same test folds."""
        if "caan_auroc" not in self.folds[0]:
            raise ValueError(f"{self.label} has no CAAN, so no CAAN head to score")
        folds = [dict(fold, f1=fold["caan_f1"], auroc=fold["caan_auroc"]) for fold in self.folds]
        return CrossValidation(self.variant, self.adn, self.attention_point, self.params, folds)

    def __str__(self):
        return f"{self.mean['f1']:.3f} ± {self.std['f1']:.3f}"


# Paired differences with a 95 % interval --------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """``mean`` difference (a row minus its reference) over ``pairs`` folds, and its interval [low, high]."""
    metric: str
    mean: float
    low: float
    high: float
    pairs: int

    @property
    def verdict(self):
        """"better" or "worse" when the interval excludes 0, else "cannot be told apart"."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "cannot be told apart"

    def __str__(self):
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _paired_values(result, reference, metric):
    def by_fold(row):
        return {(fold.get("repeat", 0), fold["fold"]): fold for fold in row.folds}
    mine, theirs = by_fold(result), by_fold(reference)
    if mine.keys() != theirs.keys():
        raise ValueError(f"{result.label} and {reference.label} were not measured on the same folds, so they "
                         f"cannot be paired")
    keys = sorted(mine)
    differences = np.array([mine[key][metric] - theirs[key][metric] for key in keys], dtype=np.float64)
    test_share = np.mean([mine[key]["n_test"] / mine[key]["n_train"] for key in keys])
    return differences, test_share


def paired_difference(result, reference, metric="auroc", confidence=0.95, corrected=True):
    """How much ``result`` beats ``reference`` in ``metric``, fold by fold, with a ``confidence`` interval.

    Both rows must come from the same folds (one ``prepare_folds``). The J = repeats x folds paired
    differences d_j give mean(d) ± t_{J-1} * sqrt(c * var(d)), a paired t-interval. Folds of
    cross-validation share most of their training images, so their differences are correlated and
    the textbook c = 1/J gives intervals that are too narrow; ``corrected=True`` uses Nadeau and
    Bengio's (2003) c = 1/J + n_test/n_train, the usual correction for repeated k-fold
    cross-validation (Bouckaert and Frank 2004). ``corrected=False`` is the textbook interval (what
    ``scipy.stats.ttest_rel`` gives). A t-interval rather than a bootstrap because a bootstrap over
    correlated folds has the same flaw and no correction; with 3 to 15 pairs the t-quantile also
    widens the interval for the few pairs, as it should.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number between 0 and 1, e.g. 0.95, got {confidence!r}")
    differences, test_share = _paired_values(result, reference, metric)
    pairs = len(differences)
    if pairs < 2:
        raise ValueError("an interval needs at least two paired folds")
    spread = (1 / pairs + (test_share if corrected else 0.0)) * differences.var(ddof=1)
    half_width = stats.t.ppf((1 + confidence) / 2, pairs - 1) * np.sqrt(spread)
    mean = float(differences.mean())
    return Difference(metric, mean, mean - half_width, mean + half_width, pairs)


# Table 3 ----------------------------------------------------------------------------------------------------
def _format_params(count):
    if count == 0:
        return "-"
    return f"{count / 1e6:.1f}M" if count >= 100_000 else f"{count / 1e3:.1f}k"


def point_text(attention_point):
    """How a table writes an attention point: 3, or 1+3 for a model with attention at several points."""
    if isinstance(attention_point, (tuple, list)):
        return "+".join(map(str, attention_point))
    return "" if attention_point is None else str(attention_point)


def _chosen_points(result):
    counts = Counter(point_text(fold["attention_point"]) for fold in result.folds)
    return "chosen on validation: " + ", ".join(f"{point} x{count}" for point, count in sorted(counts.items()))


@dataclass
class AblationTable:
    """Every cross-validation of an ablation run, with its configuration; prints as Table 3 in Markdown.

    ``results`` holds one CrossValidation per variant and attention point, the map alone and, where
    asked for, each attention variant with its point chosen on validation (``attention_point``
    None). ``rows`` keeps, per variant, the attention point with the best mean F1 on the test folds,
    as Table 3 does; ``lines`` adds the fairly chosen point and each CAAN's own head. ``fold_maps``
    are the folds the run trained on (not saved, so None after ``load_results``).
    """
    results: list
    config: dict
    environment: dict
    fold_maps: list = field(default=None, repr=False)

    @property
    def rows(self):
        best = {}
        for result in self.results:  # first of equal F1s wins: the earlier attention point
            chosen_on_validation = result.variant in ATTENTION_VARIANTS and result.attention_point is None
            if not chosen_on_validation and (result.variant not in best or result.mean["f1"] > best[result.variant].mean["f1"]):
                best[result.variant] = result
        return list(best.values())

    @property
    def baseline(self):
        return next((row for row in self.rows if row.variant == "baseline"), None)

    def lines(self):
        """(label, point, CrossValidation) for every line of the table, in the order it prints them."""
        lines = []
        for row in self.rows:
            if row.variant == "map_alone":  # named after the maps the run made
                source = MAP_SOURCES[self.config.get("map_source", "colorization")]
                lines.append((f"{source.label} alone (no training)", "", row))
                continue
            if row.variant not in ATTENTION_VARIANTS:
                lines.append((row.label, "", row))
                continue
            tried = [result.attention_point for result in self.results if result.variant == row.variant
                     and result.attention_point is not None]
            where = f"best of {','.join(map(point_text, tried))} on the test folds: " if len(tried) > 1 else ""
            lines.append((row.label, f"{where}{point_text(row.attention_point)}", row))
            lines += [(row.label, _chosen_points(result), result) for result in self.results
                      if result.variant == row.variant and result.attention_point is None]
            if "caan_auroc" in row.folds[0]:
                lines.append((f"{row.label}: {CAAN_HEAD_LABEL}", point_text(row.attention_point), row.caan_head()))
        return lines

    def differences(self, metric="auroc"):
        """{line label + point: paired_difference to the baseline} for every line but the baseline's."""
        reference = self.baseline
        if reference is None or len(reference.folds) < 2:
            return {}
        return {f"{label} ({point})" if point else label: paired_difference(result, reference, metric)
                for label, point, result in self.lines() if result is not reference}

    def to_markdown(self, metric="auroc"):
        reference = self.baseline
        compare = reference is not None and len(reference.folds) >= 2
        header = "| model | attention point | params | F1 | AUROC |"
        rule = "| --- | --- | ---: | --- | --- |"
        if compare:
            header += f" {metric.upper() if metric == 'f1' else 'AUROC'} - baseline [95 % CI] | reading |"
            rule += " --- | --- |"
        lines = [header, rule]
        for label, point, result in self.lines():
            cells = [label, point, _format_params(result.params), str(result),
                     f"{result.mean['auroc']:.3f} ± {result.std['auroc']:.3f}"]
            if compare and result is reference:
                cells += ["(reference)", ""]
            elif compare:
                difference = paired_difference(result, reference, metric)
                cells += [str(difference), difference.verdict]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    __str__ = to_markdown

    def reading(self):
        """What the intervals say, in sentences made from the table's numbers (the CLI prints it)."""
        baseline, differences = self.baseline, self.differences()
        if baseline is None or not differences:
            return "No baseline measured on two folds or more: no row can be compared with it."
        pairs = next(iter(differences.values())).pairs
        lines = [f"The baseline's held-out AUROC is {baseline.mean['auroc']:.3f}. Each difference is a row's AUROC minus "
                 f"the baseline's on the same {pairs} folds, with a 95 % interval corrected for the overlap of folds: "
                 "if it covers 0 the two cannot be told apart on this data."]
        for verdict in ("better", "worse", "cannot be told apart"):
            rows = [label for label, difference in differences.items() if difference.verdict == verdict]
            if rows:
                said = {"better": "beat the baseline", "worse": "fall behind the baseline",
                        "cannot be told apart": "cannot be told apart from the baseline"}[verdict]
                lines.append(f"- {said}: " + "; ".join(rows))
        return "\n".join(lines)

    def _repr_markdown_(self):
        return self.to_markdown()

    def save(self, out_dir):
        """Write results.json (every fold of every repeat, config, environment), results.md and results.csv."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        record = dict(config=self.config, environment=self.environment,
                      results=[asdict(result) for result in self.results])
        write_atomically(out_dir / "results.json", lambda file: file.write(json.dumps(record, indent=1).encode()))
        write_atomically(out_dir / "results.md", lambda file: file.write((self.to_markdown() + "\n").encode()))
        write_atomically(out_dir / "results.csv", lambda file: file.write(self._csv().encode()))
        return out_dir

    def _csv(self):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["model", "attention_point", "variant", "params", "f1_mean", "f1_std", "auroc_mean", "auroc_std",
                 "auroc_minus_baseline", "ci_low", "ci_high"])
        reference = self.baseline
        for label, point, result in self.lines():
            row = [label, point, result.variant, result.params, result.mean["f1"], result.std["f1"],
                   result.mean["auroc"], result.std["auroc"]]
            if reference is not None and result is not reference and len(reference.folds) >= 2:
                difference = paired_difference(result, reference)
                row += [difference.mean, difference.low, difference.high]
            writer.writerow(row)
        return buffer.getvalue()


def load_results(path):
    """Read an ablation saved by ``run_ablation(out_dir=...)`` back: ``path`` is the folder or its results.json.

    Every row is checked as it is read (known variant and ADN, attention point, a finite F1 and AUROC
    per fold), so a foreign or edited file fails here, naming itself, rather than in a later sum.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no saved results at {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not all(isinstance(record.get(key), kind) for key, kind in
                                                   (("config", dict), ("environment", dict), ("results", list))):
            raise ValueError("it needs a dict with 'config', 'environment' and a list of 'results'")
        results = [_saved_row(row, f"results[{index}]") for index, row in enumerate(record["results"])]
        return AblationTable(results, record["config"], record["environment"])
    except (TypeError, ValueError) as error:  # a binary file's UnicodeDecodeError and bad JSON are ValueErrors too
        raise ValueError(f"{path} is not a results.json written by lea_tiny: {error}") from error


def _saved_row(row, where):
    """``row`` of a results.json as a CrossValidation, or a ValueError that says what in it is wrong."""
    if not isinstance(row, dict) or row.get("variant") not in VARIANT_LABELS or row.get("adn") not in ADN_NAMES:
        got = (row.get("variant"), row.get("adn")) if isinstance(row, dict) else row
        raise ValueError(f"{where} is no known (variant, adn) row, got {got!r}")
    point = row.get("attention_point")
    several = isinstance(point, list) and point and all(is_int(one) for one in point)
    if point is not None and not several and (not is_int(point) or point not in ATTENTION_POINTS):
        raise ValueError(f"{where} has attention_point {point!r}, not one of {ATTENTION_POINTS}, a list of them, "
                         f"or null")
    if several:  # JSON keeps a tuple of points as a list
        row = dict(row, attention_point=check_attention_point("direct_attention", tuple(point)))
    if not isinstance(row.get("folds"), list) or not row["folds"] or not all(isinstance(f, dict) for f in row["folds"]):
        raise ValueError(f"{where} needs a non-empty list of folds, one dict each")
    for number, fold in enumerate(row["folds"]):
        for name, minimum in (("fold", 0), ("n_train", 1), ("n_test", 1)):
            check_int(fold.get(name), f"{where}, fold {number}: {name}", minimum)
        for metric in METRICS + tuple(name for name in ("caan_f1", "caan_auroc") if name in fold):
            check_number(fold.get(metric), f"{where}, fold {number}: {metric}", at_least=0, at_most=1)
    folds = [dict(fold, attention_point=tuple(fold["attention_point"])) if isinstance(fold.get("attention_point"), list)
             else fold for fold in row["folds"]]  # a fold of a chosen-point row says which point it took
    return CrossValidation(**dict(row, folds=folds))
