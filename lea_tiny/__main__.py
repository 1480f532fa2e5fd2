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
one line on stderr and exit code 2.
"""

import argparse
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

from lea_tiny import get_device
from lea_tiny.ablation import run_ablation
from lea_tiny.attention import ATTENTION_VARIANTS, VARIANTS, make_model
from lea_tiny.checks import check_seed
from lea_tiny.compare import ADN_LABELS
from lea_tiny.data import load_folder, make_dataset
from lea_tiny.train import fit, save_checkpoint

EMBEDDED_DATA = ("retina", "leaves")
# The teaching configuration, sized for a few minutes on a 2-core CPU. Without augmentation the CNN
# memorises its 80 training images and ranks held-out ones at chance (tutorial 07); with the eight
# dihedral symmetries it learns. At 32 px the lesions are still several pixels wide and a training
# step costs a quarter of one at 64 px. One split of 3 folds fits the 5-minute budget; its intervals
# are wide (2 degrees of freedom), and --repeats 3 (about 3x the time) narrows them.
# Batches of 8 and lr 3e-4 give enough steps for BatchNorm's running statistics to follow the weights.
# Attention point 3: the best point of the basic CNN's Direct Attention and ResNet CAAN rows on
# Retina in the paper (Table 7), fixed in advance, so the demo's point is not chosen on its test folds.
DEMO_DEFAULTS = dict(image_size=32, n_normal=90, n_anomalous=30, folds=3, repeats=1, epochs=20, colorizer_epochs=10,
                     batch_size=8, lr=3e-4, augment=True, adn="cnn", variants="baseline,direct_attention,caan_mobilenet",
                     attention_points="3", out="lea_tiny_out/demo")
# The paper's protocol (Section 4-2; Table 2's Retina counts): hours on a CPU, meant for a GPU.
# lr None: the paper's rate for the ADN (1e-4, or 1e-5 for the VGGs).
ABLATION_DEFAULTS = dict(image_size=256, n_normal=337, n_anomalous=98, folds=5, repeats=1, epochs=100,
                         colorizer_epochs=500, batch_size=16, lr=None, augment=False, adn="resnet18",
                         variants=",".join(VARIANTS), attention_points="1,2,3,4,5", out="lea_tiny_out/ablation")


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
    try:
        points = [int(point) for point in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected attention points from 1..5 separated by commas, got {text!r}") \
            from None
    if not all(1 <= point <= 5 for point in points):
        raise argparse.ArgumentTypeError(f"attention points must lie in 1..5, got {text!r}")
    return points


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
    paper = " (the paper: %s)"
    parser.add_argument("--data", default="retina",
                        help="'retina' or 'leaves' (the embedded synthetic data sets), or a folder of images "
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
    parser.add_argument("--adn", choices=sorted(ADN_LABELS), default=defaults["adn"],
                        help="the anomaly detection network (default: %(default)s)")
    parser.add_argument("--variants", type=_variants, default=_variants(defaults["variants"]),
                        help=f"comma-separated variants of Table 3 to run, from {','.join(VARIANTS)} "
                             f"(default: {defaults['variants']})")
    parser.add_argument("--attention-points", "--attention-point", type=_attention_points,
                        default=_attention_points(defaults["attention_points"]),
                        help="comma-separated attention points (1..5) at which each attention variant "
                             f"({', '.join(ATTENTION_VARIANTS)}) is run; the table keeps the best "
                             f"(default: {defaults['attention_points']})")
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser():
    parser = _OneLineParser(prog="lea-tiny", description="LEA-Net (Katafuchi & Tokunaga) in a few small modules: "
                            "train and cross-validate it from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,ablation}",
                                     parser_class=_OneLineParser)
    demo = commands.add_parser("demo", help="LEA-Net end to end in minutes on a CPU (teaching configuration)",
                               description="Train the colourisers, make the colour anomaly maps, cross-validate the "
                                           "baseline, Direct Attention and LEA-Net (MobileNet CAAN) at attention point "
                                           f"{DEMO_DEFAULTS['attention_points']}, print the F1/AUROC table and write "
                                           "it, figures (maps.png, attention.png) and a checkpoint (lea_net.pt) to --out.")
    _add_options(demo, DEMO_DEFAULTS)
    ablation = commands.add_parser("ablation", help="Table 3 for one ADN with the paper's protocol (for a GPU)",
                                   description="Every variant of Table 3 for one ADN, each attention variant at "
                                               "every attention point; the table reports the best point. Defaults are "
                                               "the paper's protocol; results go to --out.")
    _add_options(ablation, ABLATION_DEFAULTS)
    return parser


def _load_data(args, defaults):
    counts = dict(n_normal=args.n_normal or defaults["n_normal"], n_anomalous=args.n_anomalous or defaults["n_anomalous"])
    if args.data in EMBEDDED_DATA:
        if args.normal_classes:
            raise ValueError("--normal-classes applies to a folder of class folders, not to the embedded data")
        return make_dataset(args.data, **counts, image_size=args.image_size, seed=args.seed)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data!r} is neither {' nor '.join(EMBEDDED_DATA)} nor a folder")
    if args.n_normal or args.n_anomalous:
        raise ValueError("--n-normal and --n-anomalous apply to the embedded data only, not to a folder")
    return load_folder(args.data, image_size=args.image_size, normal_classes=args.normal_classes)


# The demo's figures ---------------------------------------------------------------------------------------
def _show(axis, image, title, **kwargs):
    axis.imshow(image, **kwargs)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def plot_maps(dataset, fold, path, per_class=4):
    """Test images of one fold with their scaled colour anomaly maps (and true masks, where known)."""
    test = torch.from_numpy(fold.test_index)
    chosen = torch.cat([test[dataset.labels[test] == label][:per_class] for label in (0, 1)])
    rows = 3 if dataset.masks is not None else 2
    figure = Figure(figsize=(1.6 * len(chosen), 1.7 * rows), layout="constrained")
    axes = figure.subplots(rows, len(chosen), squeeze=False)
    for column, index in enumerate(chosen.tolist()):
        kind = "anomalous" if dataset.labels[index] == 1 else "normal"
        _show(axes[0, column], dataset.images[index].permute(1, 2, 0).numpy(), kind)
        _show(axes[1, column], fold.scaled_maps[index, 0].numpy(), "anomaly map", cmap="inferno", vmin=0, vmax=1)
        if dataset.masks is not None:
            _show(axes[2, column], dataset.masks[index].numpy(), "true anomaly", cmap="gray", vmin=0, vmax=1)
    figure.suptitle(f"Colour anomaly maps of fold {fold.number}'s test images (scale {fold.scale:.1f} CIEDE2000 = 1)",
                    fontsize=9)
    figure.savefig(path, dpi=120)


def plot_attention(model, dataset, fold, path):
    """For one anomalous test image: its map, the attention map M and the ADN's features before/after Eq. 3."""
    test = torch.from_numpy(fold.test_index)
    index = test[dataset.labels[test] == 1][0].item()
    device = next(model.parameters()).device
    with torch.inference_mode():
        _, _, features = model(dataset.images[index:index + 1].to(device), fold.scaled_maps[index:index + 1].to(device),
                               return_features=True)
    point = model.attention_point
    before = features["before"][0].float().mean(0).cpu().numpy()
    after = features["points"][point - 1][0].float().mean(0).cpu().numpy()
    figure = Figure(figsize=(8, 2), layout="constrained")
    axes = figure.subplots(1, 5)
    _show(axes[0], dataset.images[index].permute(1, 2, 0).numpy(), "anomalous test image")
    _show(axes[1], fold.scaled_maps[index, 0].numpy(), "anomaly map", cmap="inferno", vmin=0, vmax=1)
    _show(axes[2], features["attention"][0, 0].float().cpu().numpy(), f"attention M (point {point})", cmap="inferno")
    low, high = min(before.min(), after.min()), max(before.max(), after.max())
    _show(axes[3], before, "ADN features before\n(channel mean)", cmap="viridis", vmin=low, vmax=high)
    _show(axes[4], after, "after (1 + M) * f\n(channel mean)", cmap="viridis", vmin=low, vmax=high)
    figure.savefig(path, dpi=120)


def _attention_figure(args, dataset, table):
    """Train one attention model on fold 0's training part, draw attention.png and save it as lea_net.pt."""
    variant = next(variant for variant in reversed(args.variants) if variant in ATTENTION_VARIANTS)
    best = next(row for row in table.rows if row.variant == variant)
    fold = table.fold_maps[0]
    model = make_model(variant, adn=args.adn, attention_point=best.attention_point, image_size=args.image_size)
    train = torch.from_numpy(fold.train_index)
    fit(model, dataset.images[train], fold.scaled_maps[train], dataset.labels[train], epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, augment=args.augment, device=args.device, seed=args.seed, progress=not args.quiet)
    plot_attention(model, dataset, fold, args.out / "attention.png")
    save_checkpoint(args.out / "lea_net.pt", model, dict(image_size=args.image_size, map_scale=fold.scale,
                                                         dataset=dataset.name, trained_on="fold 0 training part"))


def run(args):
    defaults = DEMO_DEFAULTS if args.command == "demo" else ABLATION_DEFAULTS
    dataset = _load_data(args, defaults)
    labels = torch.as_tensor(dataset.labels)
    print(f"{args.command}: {dataset.name}, {int((labels == 0).sum())} normal + {int((labels == 1).sum())} anomalous "
          f"images at {args.image_size} px; ADN {args.adn}; {args.repeats} x {args.folds} folds, {args.epochs} epochs, "
          f"{'with' if args.augment else 'no'} augmentation; device {get_device(args.device)}")
    table = run_ablation(dataset, adn=args.adn, variants=args.variants, attention_points=args.attention_points,
                         folds=args.folds, seed=args.seed, epochs=args.epochs, colorizer_epochs=args.colorizer_epochs,
                         batch_size=args.batch_size, lr=args.lr, out_dir=args.out, device=args.device,
                         progress=not args.quiet, repeats=args.repeats, augment=args.augment,
                         choose_points=args.choose_points)
    print()
    print(table)
    print()
    print(table.reading())
    written = ["results.json", "results.md", "results.csv"]
    if args.command == "demo":
        plot_maps(dataset, table.fold_maps[0], args.out / "maps.png")
        written.append("maps.png")
        if any(variant in ATTENTION_VARIANTS for variant in args.variants):
            _attention_figure(args, dataset, table)
            written += ["attention.png", "lea_net.pt"]
    print(f"\nwrote {', '.join(written)} to {args.out}")


def main(argv=None):
    """Entry point of ``python -m lea_tiny`` and the ``lea-tiny`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"lea-tiny {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
