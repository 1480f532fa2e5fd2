"""The protocol: how an ablation is trained and measured, in one object, and the two this project uses.

As nanoGPT keeps a model's settings in one ``GPTConfig``, lea_tiny keeps every setting of a
cross-validated ablation in one frozen dataclass, ``Protocol``, checked once when it is made:

    PAPER      Section 4-2: ResNet18, every variant of Table 3 at attention points 1..5, 5 folds
               once, 100 epochs in batches of 16 at the paper's learning rate, colourisers for
               500 epochs, no augmentation. Hours on a GPU.
    TEACHING   the demo's and the tutorials': the basic CNN, baseline, Direct Attention and LEA-Net
               at point 3, 3 folds, 20 epochs in batches of 8 at 3e-4, colourisers for 10 epochs,
               augmentation. Minutes on a 2-core CPU.

Three settings come from the follow-ups (chapter 15), each off in both: ``gate`` (the learnable
gate of ``make_model``), ``caan_training`` ("frozen" or "fine_tune": ``lea_tiny.two_stage``) and
``map_source`` (``MAP_SOURCES``: the colour anomaly map, or an autoencoder's reconstruction map).
An attention point may be a tuple, such as (1, 3): attention at both points of one model.

A chapter or a command changes what it needs: ``TEACHING.replace(repeats=3)``. The data a
protocol runs on is the data set's business; ``PAPER_DATA`` and ``TEACHING_DATA`` are the
``make_dataset`` arguments that go with each (image size and counts).

Why TEACHING departs from PAPER:
- Augmentation (the eight symmetries of the square): without it the CNN memorises its 80 training
  images and ranks held-out ones at chance (tutorial 07); the paper trains without.
- 32 px: the lesions are still several pixels wide, and a step costs a quarter of one at 64 px.
- Batches of 8 at 3e-4: enough steps in 20 epochs for BatchNorm's running statistics to follow
  the weights.
- Point 3, fixed in advance: the best point of the basic CNN's Direct Attention and ResNet CAAN rows
  on Retina in the paper (Table 7), so the demo's point is not chosen on its test folds.
- 3 folds once: fits the 5-minute budget; the intervals are wide (2 degrees of freedom), and
  ``repeats=3`` (about 3x the time) narrows them.
"""

import dataclasses
from dataclasses import dataclass
from typing import Callable

from lea_tiny.adn import ADN_NAMES
from lea_tiny.attention import ATTENTION_POINTS, ATTENTION_VARIANTS, VARIANTS
from lea_tiny.autoencoder import fold_reconstruction_maps
from lea_tiny.checks import check_bool, check_int, check_lr, check_seed
from lea_tiny.maps import fold_anomaly_maps
from lea_tiny.train import default_lr
from lea_tiny.two_stage import CAAN_MODES


@dataclass(frozen=True)
class MapSource:
    """Where each fold's anomaly maps come from, and what a table calls them.

    ``fold_maps(images, labels, train_index, *, epochs, cross_fit_parts, seed, device) -> (N, H, W)``
    learns from the fold's training normals only (``maps.fold_anomaly_maps`` is the contract).
    """
    label: str
    fold_maps: Callable


MAP_SOURCES = {"colorization": MapSource("Colour anomaly map", fold_anomaly_maps),
               "autoencoder": MapSource("Reconstruction map", fold_reconstruction_maps)}
CAAN_TRAINING = ("joint", *CAAN_MODES)  # Eq. 1, or the two stages of lea_tiny.two_stage


def _attention_point(point):
    """An attention point 1..5 as an int, or several as a sorted tuple of distinct ones (checked)."""
    points = tuple(point) if isinstance(point, (tuple, list)) else (point,)
    for one in points:
        check_int(one, "every attention point", ATTENTION_POINTS[0], ATTENTION_POINTS[-1])
    if not points or len(set(points)) != len(points):
        raise ValueError(f"an attention point of several points needs distinct points, got {point!r}")
    return tuple(sorted(points)) if isinstance(point, (tuple, list)) else point


@dataclass(frozen=True)
class Protocol:
    """Every setting of ``run_ablation``: what is trained, on which folds, for how long.

    ``lr`` None means the paper's rate for the ADN (``default_lr``); ``choose_points`` None means
    "when more than one attention point is tried" (``run_ablation``); ``cross_fit_parts`` is the number of
    parts the training normals are split into for their own maps (``fold_anomaly_maps``);
    ``colorizer_epochs`` trains whichever network ``map_source`` names. ``gate`` and
    ``caan_training`` change only the variants they apply to (attention variants; CAAN variants).
    """
    adn: str = "resnet18"
    variants: tuple = tuple(VARIANTS)
    attention_points: tuple = ATTENTION_POINTS
    folds: int = 5                 # Section 4-2: five stratified folds, once
    repeats: int = 1
    epochs: int = 100              # Section 4-2, the classifiers
    colorizer_epochs: int = 500    # Section 4-2, the U-Net (with early stopping)
    cross_fit_parts: int = 2
    batch_size: int = 16
    lr: float | None = None
    augment: bool = False
    choose_points: bool | None = None
    seed: int = 0
    gate: bool = False             # the follow-ups: f' = f + w_p M_p f, w_p learnt from 0
    caan_training: str = "joint"   # Eq. 1; "frozen" / "fine_tune": the CAAN first, alone
    map_source: str = "colorization"

    def __post_init__(self):
        if self.adn not in ADN_NAMES:
            raise ValueError(f"unknown ADN {self.adn!r}; expected one of {sorted(ADN_NAMES)}")
        if isinstance(self.variants, str):
            raise ValueError(f"variants must be a sequence of variant names, got the string {self.variants!r}")
        object.__setattr__(self, "variants", tuple(self.variants))
        # one model per entry: an int is one point, a tuple (1, 3) several points of one model
        object.__setattr__(self, "attention_points", tuple(map(_attention_point, self.attention_points)))
        unknown = [variant for variant in self.variants if variant not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}" if unknown
                             else "variants is empty")
        if any(variant in ATTENTION_VARIANTS for variant in self.variants) and not self.attention_points:
            raise ValueError("attention_points is empty but attention variants were asked for")
        if len(set(self.attention_points)) != len(self.attention_points):
            raise ValueError(f"attention_points {list(self.attention_points)} repeats a point, which would train the "
                             f"same models twice; list each point once")
        for name, minimum in (("folds", 2), ("repeats", 1), ("epochs", 1), ("colorizer_epochs", 1),
                              ("cross_fit_parts", 2), ("batch_size", 2)):
            check_int(getattr(self, name), name, minimum)
        # every fold of every repeat derives its seeds from this one (lea_tiny.ablation.fold_seed)
        check_seed(self.seed, more=10_000 * (self.repeats - 1) + 100 * (self.folds - 1) + self.cross_fit_parts)
        check_lr(self.lr)
        check_bool(self.augment, "augment")
        if self.choose_points is not None:
            check_bool(self.choose_points, "choose_points")
        check_bool(self.gate, "gate")
        for name, allowed in (("caan_training", CAAN_TRAINING), ("map_source", tuple(MAP_SOURCES))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")

    def replace(self, **changes):
        """A copy with ``changes`` (checked like a new protocol); an unknown setting is named."""
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown protocol setting(s) {unknown}; a Protocol has "
                             f"{[field.name for field in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    @property
    def learning_rate(self):
        return self.lr or default_lr(self.adn)

    @property
    def chooses_points(self):
        """Whether ``run_ablation`` adds the row whose point is chosen on validation data."""
        return len(self.attention_points) > 1 if self.choose_points is None else self.choose_points

    def as_config(self):
        """The settings as results.json records them (lists, the learning rate and point choice resolved)."""
        return dataclasses.asdict(self) | dict(variants=list(self.variants), attention_points=list(self.attention_points),
                                               lr=self.learning_rate, choose_points=self.chooses_points)


PAPER = Protocol()
TEACHING = Protocol(adn="cnn", variants=("baseline", "direct_attention", "caan_mobilenet"), attention_points=(3,),
                    folds=3, epochs=20, colorizer_epochs=10, batch_size=8, lr=3e-4, augment=True)
# Section 4-1 and Table 2 (Retina): 337 normal and 98 anomalous images at 256 px.
PAPER_DATA = dict(n_normal=337, n_anomalous=98, image_size=256)
TEACHING_DATA = dict(n_normal=90, n_anomalous=30, image_size=32)
