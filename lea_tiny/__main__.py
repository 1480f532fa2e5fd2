"""The command line: ``python -m lea_tiny demo`` and ``python -m lea_tiny ablation`` (or ``lea-tiny ...``).

demo      LEA-Net from end to end in a few minutes on a laptop CPU, in the teaching configuration:
          colourisers per fold, colour anomaly maps, cross-validation of the
          baseline, Direct Attention and LEA-Net (MobileNet CAAN) at one attention point, with
          augmentation; prints the F1/AUROC table with each row's paired difference to the baseline
          and its 95 % interval, and writes it (results.json/.md/.csv), two figures and a checkpoint.
ablation  Table 3 for one ADN (Section 4-3): every variant, each attention variant at every
          attention point, with the paper's protocol as defaults (256 px, the Retina counts of
          Table 2, 5 folds once, 100 epochs, no augmentation). Meant for a GPU; writes results to --out.

Both take the same options; only their defaults differ. Bad options, folders or values end with
one line on stderr and exit code 2. Both save as they go (each fold's maps, the table after every
cross-validation); ``--resume`` with the same options and --out continues an interrupted run.
The demo's figure and checkpoint come from a model its cross-validation trained (fold 0), not a new one.
"""

import argparse
import sys
from pathlib import Path

import torch

from lea_tiny import get_device, plots, relatives
from lea_tiny.ablation import run_ablation
from lea_tiny.adn import ADN_NAMES
from lea_tiny.attention import ATTENTION_VARIANTS, VARIANTS
from lea_tiny.checks import check_seed
from lea_tiny.data import load_folder, make_dataset
from lea_tiny.embedded import EMBEDDED_DATASETS
from lea_tiny.compare import point_text
from lea_tiny.protocol import CAAN_TRAINING, MAP_SOURCES, PAPER, PAPER_DATA, TEACHING, TEACHING_DATA
from lea_tiny.train import save_checkpoint


def _defaults(protocol, data, out):
    """The options' defaults of one command: a protocol and its data (``lea_tiny.protocol``), and a folder."""
    settings = {name: getattr(protocol, name) for name in ("folds", "repeats", "epochs", "colorizer_epochs",
                                                          "batch_size", "lr", "augment", "adn", "gate",
                                                          "caan_training", "map_source")}
    return dict(data, **settings, variants=",".join(protocol.variants),
                attention_points=",".join(map(point_text, protocol.attention_points)), out=out)


# Each command: its protocol, the embedded data it draws, and its output folder.
COMMANDS = {"demo": (TEACHING, TEACHING_DATA, "lea_tiny_out/demo"),
            "ablation": (PAPER, PAPER_DATA, "lea_tiny_out/ablation")}
DEFAULTS = {command: _defaults(*settings) for command, settings in COMMANDS.items()}


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block) and exits with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# Option types: each turns a bad value into one clear message ------------------------------------------
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    try:
        return check_seed(int(text))
    except ValueError as error:  # above 2**32 - 1
        raise argparse.ArgumentTypeError(str(error)) from None


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _variants(text):
    variants = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {','.join(VARIANTS)}")
    return variants


def _attention_points(text):
    """"1,3,1+3" -> [1, 3, (1, 3)]: one model per comma, attention at each point joined by +."""
    try:
        entries = [[int(point) for point in entry.split("+")] for entry in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected attention points from 1..5 separated by commas (1+3 for a model "
                                         f"with attention at both), got {text!r}") from None
    if not all(1 <= point <= 5 for entry in entries for point in entry):
        raise argparse.ArgumentTypeError(f"attention points must lie in 1..5, got {text!r}")
    if any(len(set(entry)) != len(entry) for entry in entries):
        raise argparse.ArgumentTypeError(f"a model's attention points must differ, got {text!r}")
    return [entry[0] if len(entry) == 1 else tuple(sorted(entry)) for entry in entries]


def _class_names(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated class folder names, got {text!r}")
    return names


def _device(text):
    try:
        return get_device(text)
    except ValueError as error:  # an unknown name, mps or meta, or CUDA that is not here
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_options(parser, defaults):
    """The options of demo and ablation: the data, then how the ablation trains (``_add_training_options``)."""
    paper = " (the paper: %s)"
    parser.add_argument("--data", default="retina",
                        help=f"{' or '.join(map(repr, EMBEDDED_DATASETS))} (the embedded synthetic data sets), "
                             "or a folder of images "
                             "(good/ + defect folders, MVTec AD layout, or class folders; see load_folder) "
                             "(default: %(default)s)")
    parser.add_argument("--image-size", type=_positive_int, default=defaults["image_size"],
                        help="images are resized to this many pixels square (default: %(default)s)" + paper % 256)
    parser.add_argument("--n-normal", type=_positive_int, default=None,
                        help=f"normal images drawn from embedded data (default: {defaults['n_normal']})")
    parser.add_argument("--n-anomalous", type=_positive_int, default=None,
                        help=f"anomalous images drawn from embedded data (default: {defaults['n_anomalous']})")
    parser.add_argument("--normal-classes", type=_class_names, default=None,
                        help="for a folder of class folders (PlantVillage): comma-separated names of the normal "
                             "classes, e.g. Potato___healthy; every other class is anomalous")
    _add_training_options(parser, defaults, paper)


def _add_training_options(parser, defaults, paper):
    parser.add_argument("--folds", type=_positive_int, default=defaults["folds"],
                        help="stratified cross-validation folds (default: %(default)s)" + paper % 5)
    parser.add_argument("--repeats", type=_positive_int, default=defaults["repeats"],
                        help="differently seeded k-fold splits; every row sees the same ones, so rows are compared "
                             "fold by fold with a 95%% interval (default: %(default)s)" + paper % 1)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=defaults["augment"],
                        help="show each training batch under one of the 8 rotations/mirrors of the square, the "
                             "same for images and maps (default: %(default)s)" + paper % "no augmentation")
    parser.add_argument("--choose-points", action=argparse.BooleanOptionalAction, default=None,
                        help="add, per attention variant, the row whose point is chosen on validation data "
                             "inside each training part (default: when more than one point is tried)")
    parser.add_argument("--epochs", type=_positive_int, default=defaults["epochs"],
                        help="training epochs of every classifier (default: %(default)s)" + paper % 100)
    parser.add_argument("--colorizer-epochs", type=_positive_int, default=defaults["colorizer_epochs"],
                        help="most epochs of each colouriser, which stops early (default: %(default)s)"
                             + paper % 500)
    parser.add_argument("--adn", choices=sorted(ADN_NAMES), default=defaults["adn"],
                        help="the anomaly detection network (default: %(default)s)")
    parser.add_argument("--variants", type=_variants, default=_variants(defaults["variants"]),
                        help=f"comma-separated variants of Table 3 to run, from {','.join(VARIANTS)} "
                             f"(default: {defaults['variants']})")
    parser.add_argument("--attention-points", "--attention-point", type=_attention_points,
                        default=_attention_points(defaults["attention_points"]),
                        help="comma-separated attention points (1..5) at which each attention variant "
                             f"({', '.join(ATTENTION_VARIANTS)}) is run, 1+3 for one model with attention at "
                             f"both; the table keeps the best (default: {defaults['attention_points']})")
    parser.add_argument("--gate", action=argparse.BooleanOptionalAction, default=defaults["gate"],
                        help="the follow-ups' learnable gate: f' = f + w M f at each attention point, w learnt from "
                             "0 (default: %(default)s)" + paper % "Eq. 3, f' = (1 + M) f")
    parser.add_argument("--caan-training", choices=CAAN_TRAINING, default=defaults["caan_training"],
                        help="joint: Eq. 1; frozen / fine_tune: the CAAN first learns from the maps alone, then the "
                             "ADN trains with it frozen or fine-tuned (default: %(default)s)" + paper % "joint")
    parser.add_argument("--map-source", choices=tuple(MAP_SOURCES), default=defaults["map_source"],
                        help="the anomaly map: colourisation (CIEDE2000) or an autoencoder's reconstruction error, "
                             "both learnt from each fold's training normals (default: %(default)s)"
                             + paper % "colorization")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults["batch_size"],
                        help="images per training step (default: %(default)s)" + paper % 16)
    parser.add_argument("--lr", type=_learning_rate, default=defaults["lr"],
                        help=f"Adam learning rate (default: {defaults['lr'] or 'as the paper'})"
                             + paper % "1e-4, 1e-5 for the VGGs")
    parser.add_argument("--device", type=_device, default=None,
                        help="cpu, cuda, cuda:1, ... (default: cuda when present, else cpu)")
    parser.add_argument("--seed", type=_seed, default=0, help="seeds data, folds and training (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(defaults["out"]),
                        help="folder for the results (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run saved in --out: its colour anomaly maps and finished "
                             "cross-validations are kept, the rest is run (refused if any option differs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser():
    parser = _OneLineParser(prog="lea-tiny", description="LEA-Net (Katafuchi & Tokunaga) in a few small modules: "
                            "train and cross-validate it from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,ablation,relatives}",
                                     parser_class=_OneLineParser)
    demo = commands.add_parser("demo", help="LEA-Net end to end in minutes on a CPU (teaching configuration)",
                               description="Train the colourisers, make the colour anomaly maps, cross-validate the "
                                           "baseline, Direct Attention and LEA-Net (MobileNet CAAN) at attention point "
                                           f"{DEFAULTS['demo']['attention_points']}, print the F1/AUROC table and write "
                                           "it, figures (maps.png, attention.png) and a checkpoint (lea_net.pt) to --out.")
    _add_options(demo, DEFAULTS['demo'])
    ablation = commands.add_parser("ablation", help="Table 3 for one ADN with the paper's protocol (for a GPU)",
                                   description="Every variant of Table 3 for one ADN, each attention variant at "
                                               "every attention point; the table reports the best point. Defaults are "
                                               "the paper's protocol; results go to --out.")
    _add_options(ablation, DEFAULTS['ablation'])
    relatives_command = commands.add_parser(
        "relatives", help="LEA-Net beside CAVGA, AGPNet and ATAC-Net on the same folds (chapters 11-14)",
        description="Cross-validate the chosen methods, each with its key ablation, on one split; print image and "
                    "pixel AUROC with paired intervals and write results.json and results.md to --out.")
    _add_relatives_options(relatives_command)
    return parser


def _families(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in relatives.FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {','.join(relatives.FAMILIES)}")
    return names


def _add_relatives_options(parser):
    data = dict(TEACHING_DATA, out="lea_tiny_out/relatives")
    parser.add_argument("--methods", type=_families, default=list(relatives.FAMILIES),
                        help=f"comma-separated methods, from {','.join(relatives.FAMILIES)} (default: all)")
    parser.add_argument("--data", default="retina", help="as for demo (default: %(default)s)")
    for option, value in (("--image-size", data["image_size"]), ("--folds", 3), ("--repeats", 1),
                          ("--epochs", TEACHING.epochs)):
        parser.add_argument(option, type=_positive_int, default=value, help="(default: %(default)s)")
    parser.add_argument("--n-normal", type=_positive_int, default=None, help=f"(default: {data['n_normal']})")
    parser.add_argument("--n-anomalous", type=_positive_int, default=None, help=f"(default: {data['n_anomalous']})")
    parser.add_argument("--normal-classes", type=_class_names, default=None, help="as for demo")
    parser.add_argument("--device", type=_device, default=None, help="as for demo")
    parser.add_argument("--seed", type=_seed, default=0, help="(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(data["out"]), help="(default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run saved in --out: its finished methods are kept, the rest "
                             "is run (refused if any option differs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_data(args, defaults):
    counts = dict(n_normal=args.n_normal or defaults["n_normal"], n_anomalous=args.n_anomalous or defaults["n_anomalous"])
    if args.data in EMBEDDED_DATASETS:
        if args.normal_classes:
            raise ValueError("--normal-classes applies to a folder of class folders, not to the embedded data")
        return make_dataset(args.data, **counts, image_size=args.image_size, seed=args.seed)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data!r} is neither {' nor '.join(EMBEDDED_DATASETS)} nor a folder")
    if args.n_normal or args.n_anomalous:
        raise ValueError("--n-normal and --n-anomalous apply to the embedded data only, not to a folder")
    return load_folder(args.data, image_size=args.image_size, normal_classes=args.normal_classes)


# The demo's figures (drawn by lea_tiny.plots) ----------------------------------------------------------
def plot_maps(dataset, fold, path, per_class=4):
    """The first ``per_class`` normal and anomalous test images of one fold over their scaled maps."""
    test = torch.from_numpy(fold.test_index)
    chosen = torch.cat([test[dataset.labels[test] == label][:per_class] for label in (0, 1)])
    title = f"Colour anomaly maps of fold {fold.number}'s test images (scale {fold.scale:.1f} CIEDE2000 = 1)"
    plots.maps_figure(dataset, fold.scaled_maps, chosen.tolist(), title).savefig(path, dpi=120)


def plot_attention(model, dataset, fold, path):
    """The first anomalous test image of one fold: what the model's attention does there, a row per point."""
    test = torch.from_numpy(fold.test_index)
    index = test[dataset.labels[test] == 1][:1]
    image, scaled_map = dataset.subset(index), fold.scaled_maps[index]
    views = plots.attention_views(model, image.images, scaled_map)
    title = f"{model.variant}, fold {fold.number}'s first anomalous test image ({index.item()})"
    plots.attention_figure(image, scaled_map, views, [0], title).savefig(path, dpi=120)


def _figure_variant(args):
    """The attention variant whose fold-0 model the demo draws and saves: the last one asked for."""
    return next((variant for variant in reversed(args.variants) if variant in ATTENTION_VARIANTS), None)


def _attention_figure(args, dataset, table, models):
    """Draw attention.png and save lea_net.pt from the figure variant's fold-0 model at its best point.

    Returns False when that model was not trained in this run (a resumed run had finished it).
    """
    best = next(row for row in table.rows if row.variant == _figure_variant(args))
    model, fold = models.get(best.attention_point), table.fold_maps[0]
    if model is None:
        return False
    plot_attention(model, dataset, fold, args.out / "attention.png")
    save_checkpoint(args.out / "lea_net.pt", model, dict(image_size=args.image_size, map_scale=fold.scale,
                                                         dataset=dataset.name, trained_on="fold 0 training part"))
    return True


def run(args):
    defaults = DEFAULTS[args.command]
    dataset = _load_data(args, defaults)
    labels = torch.as_tensor(dataset.labels)
    print(f"{args.command}: {dataset.name}, {int((labels == 0).sum())} normal + {int((labels == 1).sum())} anomalous "
          f"images at {args.image_size} px; ADN {args.adn}; {args.repeats} x {args.folds} folds, {args.epochs} epochs, "
          f"{'with' if args.augment else 'no'} augmentation; device {get_device(args.device)}")
    draw = args.command == "demo" and _figure_variant(args) is not None
    models = {}  # attention point -> the figure variant's model trained on fold 0 of repeat 0

    def keep_figure_model(result, fold, model):
        if result.variant == _figure_variant(args) and (fold.repeat, fold.number) == (0, 0):
            models[result.attention_point] = model

    protocol = COMMANDS[args.command][0].replace(
        adn=args.adn, variants=args.variants, attention_points=args.attention_points, folds=args.folds,
        repeats=args.repeats, epochs=args.epochs, colorizer_epochs=args.colorizer_epochs, batch_size=args.batch_size,
        lr=args.lr, augment=args.augment, choose_points=args.choose_points, seed=args.seed, gate=args.gate,
        caan_training=args.caan_training, map_source=args.map_source)
    table = run_ablation(dataset, protocol, out_dir=args.out, device=args.device, progress=not args.quiet,
                         resume=args.resume, on_fold_end=keep_figure_model if draw else None)
    print()
    print(table)
    print()
    print(table.reading())
    written = ["results.json", "results.md", "results.csv", "fold_maps/"]
    if args.command == "demo":
        plot_maps(dataset, table.fold_maps[0], args.out / "maps.png")
        written.append("maps.png")
    if draw and _attention_figure(args, dataset, table, models):
        written += ["attention.png", "lea_net.pt"]
    print(f"\nwrote {', '.join(written)} to {args.out}")


def run_relatives(args):
    """The relatives command: every chosen method cross-validated on one split, saved as it goes and printed."""
    dataset = _load_data(args, TEACHING_DATA)
    chosen = [name for family in args.methods for name in relatives.FAMILIES[family]]
    rows = relatives.compare(dataset, {name: relatives.METHODS[name] for name in chosen}, folds=args.folds,
                             repeats=args.repeats, epochs=args.epochs, seed=args.seed, device=args.device,
                             progress=not args.quiet, out_dir=args.out, resume=args.resume)
    print(relatives.table(rows))
    print(f"\nwrote results.json, results.md to {args.out}")


def main(argv=None):
    """Entry point of ``python -m lea_tiny`` and the ``lea-tiny`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        run_relatives(args) if args.command == "relatives" else run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"lea-tiny {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
