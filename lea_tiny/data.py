"""The data: colour anomaly data sets that need no download, and real ones read from disk.

LEA-Net is evaluated on imbalanced data sets with about one anomalous image for every three or
four normal ones (paper, Table 2: Retina 98 : 337, Potato 50 : 152, Cloud 100 : 300, Leather
92 : 277, Wood 60 : 266), all resized to 256 x 256 (Section 4-1). Every data set here is an
``AnomalyDataset``: images (N, 3, H, W) in [0, 1], labels (1 = anomalous) and, where known, masks
of the anomalous pixels.

Read top to bottom:
    AnomalyDataset   the container every other module reads (subset, counts, summary)
    make_dataset     an embedded data set ("retina", "leaves": drawn in ``lea_tiny.embedded``),
                     imbalanced like Table 2, shuffled, seeded
    load_folder      real data on disk: good/ + defect folders, MVTec AD, PlantVillage

Departures from the paper, and why:
- The paper's data (DR2, PlantVillage Potato, MVTec AD) must be downloaded; a tutorial must run
  anywhere in seconds. So ``make_dataset`` builds stand-ins. "retina" cuts patches from
  ``skimage.data.retina()``, one real photograph of a healthy fundus, and paints lesions in the
  colours of diabetic retinopathy onto some of them: dark-crimson blot haemorrhages, clusters of
  yellow hard exudates, pale cotton-wool spots. "leaves" draws leaves like PlantVillage's healthy potato
  leaves and paints early-blight target spots and late-blight patches onto some of them.
- The lesions are *colour* anomalies by construction: they are blended in L*a*b*, where they move
  a* and b* fully towards the lesion's colour but L* only part of the way, so the texture of the
  lightness (vessels, veins) mostly survives and the colour changes more than the lightness
  (tutorial 02 measures both). A colouriser that predicts a*b* from L* (LEA-Net's step a) then
  predicts the usual colours there and misses. Real lesions change the lightness more.
- All retina patches come from one eye, so they overlap and share its colour: easier than DR2,
  where every image is a different eye under different illumination.
- We know where we painted, so the embedded data sets come with exact pixel masks; DR2 and
  PlantVillage have none (MVTec AD has them; ``load_folder`` reads them).
"""

import collections
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color, io

from lea_tiny.checks import check_dtype, check_images, check_int, check_labels, check_number, check_seed
from lea_tiny.embedded import EMBEDDED_DATASETS, draw_image, resize_image

PAPER_TABLE_2 = {  # name: (anomalous "Positive", normal "Negative") images, Table 2
    "Retina (DR2)": (98, 337),
    "Potato (PlantVillage)": (50, 152),
    "Cloud": (100, 300),
    "Leather (MVTec)": (92, 277),
    "Wood (MVTec)": (60, 266),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CONVERSIONS = {"RGBA": "composited on white", "greyscale": "copied to 3 channels"}  # what load_folder does to RGB
MIN_IMAGE_SIZE = 16


# ---------------------------------------------------------------------------------------------------
# The container
# ---------------------------------------------------------------------------------------------------

@dataclass(repr=False, eq=False)
class AnomalyDataset:
    """Images with labels (1 = anomalous) and, where known, masks of the anomalous pixels.

    images        (N, 3, H, W) float32 in [0, 1]
    labels        (N,) int64, 0 = normal, 1 = anomalous
    masks         (N, H, W) bool, True on anomalous pixels (all False on normal images), or None
                  when the data set has no masks (DR2, PlantVillage)
    name          a short name for printing
    defect_types  one string per image: "good" for normal images, else the defect (folder name,
                  class name, or the kinds of drawn lesions)
    sources       one string per image: its file path, or how it was made
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    name: str
    defect_types: list | None = None
    sources: list | None = None

    def __post_init__(self):
        images, labels, masks = check_images(self.images, allow_empty=True), self.labels, self.masks
        count = images.shape[0]
        check_labels(check_dtype(labels, "labels", torch.int64, "convert them with torch.as_tensor(labels).long()"),
                     count)
        if masks is not None:
            expected = (count, *images.shape[2:])
            check_dtype(masks, "masks", torch.bool, "convert them with masks > 0 (True on anomalous pixels)")
            if tuple(masks.shape) != expected:
                raise ValueError(f"masks must be None or a bool tensor of shape {expected}, got {tuple(masks.shape)}")
            if bool(masks[labels == 0].any()):
                raise ValueError("masks must be all False on normal images (label 0)")
        for field in ("defect_types", "sources"):
            values = getattr(self, field)
            if values is not None and len(values) != count:
                raise ValueError(f"{field} must hold one entry per image ({count}), got {len(values)}")

    def __len__(self):
        return self.images.shape[0]

    @property
    def image_size(self):
        return self.images.shape[-1]

    @property
    def counts(self):
        """dict(normal=..., anomalous=...): how many images of each class."""
        anomalous = int(self.labels.sum())
        return dict(normal=len(self) - anomalous, anomalous=anomalous)

    @property
    def normal_images(self):
        return self.images[self.labels == 0]

    @property
    def anomalous_images(self):
        return self.images[self.labels == 1]

    def subset(self, index):
        """The images at ``index`` (ints or a boolean mask; list, numpy array or tensor), as a new data set."""
        index = torch.as_tensor(np.asarray(index))
        if index.dtype == torch.bool:
            if tuple(index.shape) != (len(self),):
                raise ValueError(f"a boolean index must have shape ({len(self)},), got {tuple(index.shape)}")
            index = index.nonzero().flatten()
        if index.ndim != 1 or (index.numel() and index.is_floating_point()):
            raise ValueError(f"index must be a 1-D list of ints or booleans, got shape {tuple(index.shape)} "
                             f"and dtype {index.dtype}")
        index = index.long()
        if index.numel() and not (-len(self) <= int(index.min()) and int(index.max()) < len(self)):
            raise ValueError(f"index out of range for a data set of {len(self)} images")
        picked = index.tolist()
        return AnomalyDataset(
            images=self.images[index], labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index], name=self.name,
            defect_types=None if self.defect_types is None else [self.defect_types[i] for i in picked],
            sources=None if self.sources is None else [self.sources[i] for i in picked])

    def summary(self):
        """One line: name, size, class counts (with the anomalous : normal ratio of Table 2), masks."""
        counts = self.counts
        ratio = f"{counts['anomalous'] / counts['normal']:.3f}" if counts["normal"] else "inf"
        masks = "no masks" if self.masks is None else "with masks"
        return (f"AnomalyDataset {self.name!r}: {len(self)} images of {self.image_size}x{self.image_size} px, "
                f"{counts['normal']} normal + {counts['anomalous']} anomalous (ratio {ratio}), {masks}")

    __repr__ = summary


# ---------------------------------------------------------------------------------------------------
# make_dataset
# ---------------------------------------------------------------------------------------------------

def make_dataset(name, n_normal=90, n_anomalous=30, image_size=256, seed=0, difficulty=0.5):
    """An embedded colour anomaly data set, imbalanced like Table 2 and shuffled; no download.

    name          one of ``lea_tiny.embedded.EMBEDDED_DATASETS``: "retina" (fundus patches with
                  diabetic-retinopathy lesions, stand-in for DR2) or "leaves" (drawn leaves with
                  blight, stand-in for PlantVillage Potato)
    n_normal, n_anomalous
                  images per class. The defaults, 90 : 30 (ratio 0.333), match Table 2's Potato,
                  Cloud and Leather (0.329-0.333); Retina there is 98 : 337 (0.291).
    image_size    side in pixels (the paper: 256; the tutorials teach at 64)
    seed          the same seed gives the same images, at any image size
    difficulty    0..1: lesion size and colour contrast, from big and strong (0) to tiny and faint (1)

    Image k of each class comes from its own generator, seeded with (seed, label, k), and the
    lesions are drawn in continuous coordinates; so the same seed gives the same scenes at every
    image size, and the same base image and lesion layout at every difficulty (only lesion size
    and contrast change). The classes are interleaved by a seeded permutation.
    Masks are True where a lesion's shape alpha exceeds 0.5. Every lesion is at least a pixel in
    radius and the pixel where the lesions are strongest is always marked, so every anomalous
    image has anomalous pixels. The first call loads the photograph for "retina" (then cached).
    """
    if name not in EMBEDDED_DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {tuple(EMBEDDED_DATASETS)}, "
                         f"or read your own with load_folder")
    n_normal, n_anomalous = check_int(n_normal, "n_normal", 0), check_int(n_anomalous, "n_anomalous", 0)
    if n_normal + n_anomalous == 0:
        raise ValueError("n_normal + n_anomalous must be at least 1, got 0 images")
    image_size = check_int(image_size, "image_size", MIN_IMAGE_SIZE)
    seed = check_seed(seed)
    check_number(difficulty, "difficulty", at_least=0, at_most=1)

    labels = np.repeat([0, 1], [n_normal, n_anomalous])
    index_in_class = np.concatenate([np.arange(n_normal), np.arange(n_anomalous)])
    order = np.random.default_rng(seed).permutation(len(labels))
    drawn = [draw_image(name, np.random.default_rng((seed, labels[i], index_in_class[i])), image_size,
                         bool(labels[i]), difficulty) for i in order]
    rgb, masks, defect_types, sources = zip(*drawn)
    return AnomalyDataset(
        images=torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous(),
        labels=torch.from_numpy(labels[order].astype(np.int64)),
        masks=torch.from_numpy(np.stack(masks)), name=name,
        defect_types=list(defect_types), sources=list(sources))


# ---------------------------------------------------------------------------------------------------
# load_folder: real data on disk
# ---------------------------------------------------------------------------------------------------

def _images_in(folder):
    """The image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))


def _subfolders(folder):
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _read(path):
    """An image file as float RGB (h, w, 3) in [0, 1], and its conversion (a key of CONVERSIONS, or None).

    Integer images are divided by their type's maximum (255 for 8 bits); float images must already
    hold [0, 1], since clipping a float TIFF of 0..255 would turn most of it white. Images smaller than
    MIN_IMAGE_SIZE on a side are refused: resized up to the image size they would be a blur of a few
    pixels, with no texture for the colouriser to learn (and a 1 x 1 image is one flat colour).
    """
    try:
        with warnings.catch_warnings():  # imageio's search for a plugin that can read a broken file is noisy
            warnings.simplefilter("ignore", DeprecationWarning)
            image = io.imread(path)
    except Exception as error:  # imageio and PIL raise many types for a broken file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read image file {path}: is it a valid image? ({reason})") from None
    if image.dtype.kind not in "uif" or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        raise ValueError(f"cannot read image file {path}: unsupported array of shape {image.shape}, "
                         f"dtype {image.dtype}")
    if min(image.shape[:2]) < MIN_IMAGE_SIZE:
        raise ValueError(f"image file {path} is {image.shape[1]} x {image.shape[0]} px, smaller than "
                         f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}: too small to resize to a useful image; remove it")
    if image.dtype.kind == "f" and not (np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1):
        found = f"values in [{image.min():.4g}, {image.max():.4g}]" if np.isfinite(image).all() else "NaN or inf"
        raise ValueError(f"image file {path} holds {found}; float images must hold [0, 1]: scale it (e.g. "
                         f"divide 0..255 by 255) or save it as 8 or 16 bits")
    image = image.astype(np.float32) / (np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1)
    conversion = None
    if image.ndim == 3 and image.shape[2] == 4:
        image, conversion = color.rgba2rgb(image).astype(np.float32), "RGBA"  # composited on white
    elif image.ndim == 3 and image.shape[2] == 2:  # grey + alpha: the alpha is dropped
        image = image[..., 0]
    if image.ndim == 2:
        image, conversion = np.repeat(image[..., None], 3, axis=2), "greyscale"
    return image, conversion


def _read_mask(path, size):
    mask, _ = _read(path)
    tensor = torch.from_numpy(mask[..., 0] > 0.5)[None, None].float()
    return F.interpolate(tensor, size=(size, size), mode="nearest-exact")[0, 0].bool()


def _find_files(root, normal_classes):
    """The layout of ``root``: (normal files, anomalous files as (path, defect), layout name)."""
    if normal_classes is not None:
        if not isinstance(normal_classes, (list, tuple)) or not normal_classes \
                or not all(isinstance(name, str) for name in normal_classes):
            raise ValueError(f"normal_classes must be a non-empty list of folder names, e.g. ['healthy'], "
                             f"got {normal_classes!r}")
        present = {folder.name: folder for folder in _subfolders(root) if _images_in(folder)}
        missing = sorted(set(normal_classes) - set(present))
        if missing:
            raise ValueError(f"normal_classes {missing} are not folders with images in {root}; "
                             f"it has {sorted(present) or 'no such folders'}")
        normal = [path for name in sorted(set(normal_classes)) for path in _images_in(present[name])]
        anomalous = [(path, name) for name in sorted(set(present) - set(normal_classes))
                     for path in _images_in(present[name])]
        return normal, anomalous, "class folders"
    if (root / "train" / "good").is_dir() and (root / "test").is_dir():
        normal = _images_in(root / "train" / "good")
        tests = _subfolders(root / "test")
        normal += [path for folder in tests if folder.name == "good" for path in _images_in(folder)]
        anomalous = [(path, folder.name) for folder in tests if folder.name != "good" for path in _images_in(folder)]
        return normal, anomalous, "MVTec AD"
    if (root / "good").is_dir():
        normal = _images_in(root / "good")
        anomalous = [(path, folder.name) for folder in _subfolders(root) if folder.name != "good"
                     for path in _images_in(folder)]
        return normal, anomalous, "good/ + defect folders"
    if not _subfolders(root):
        loose = len(_images_in(root))
        found = f"its {loose} images lie directly in it" if loose else "no images found"
        raise ValueError(f"no image folders in {root} ({found}): put normal images in {root / 'good'} "
                         f"and anomalous ones in {root / '<defect>'} folders")
    raise ValueError(f"cannot tell which images in {root} are normal: expected a good/ folder, the MVTec AD "
                     f"layout (train/good, test/<defect>), or normal_classes=[...] naming class folders "
                     f"among {[folder.name for folder in _subfolders(root)]}")


def load_folder(root, image_size=256, normal_classes=None):
    """Read an anomaly data set from disk into an AnomalyDataset; the layout is detected.

    Three layouts (images are .png, .jpg, .jpeg, .bmp, .tif or .tiff files, read in name order):

    good/ + defect folders   root/good/*      normal
                             root/<defect>/*  anomalous, one folder per defect type (any number)
                             (an MVTec AD category's test/ folder is such a folder)
    MVTec AD category        root/train/good/*, root/test/good/*        normal
                             root/test/<defect>/*                       anomalous
                             root/ground_truth/<defect>/<stem>_mask.png masks (optional)
    class folders            root/<class>/*, with ``normal_classes=["healthy", ...]`` naming the
                             normal classes; every other class folder is anomalous (PlantVillage:
                             root = .../Potato with Potato___healthy, Potato___Early_blight, ...)

    Images are resized to ``image_size`` x ``image_size`` (bilinear, anti-aliased), as the paper
    did (Section 4-1); non-square images are stretched, not cropped. RGBA images are composited on
    white and greyscale ones copied to three channels; a warning says how many were converted.
    Files under 16 px on a side, and float files with values outside [0, 1], are refused (``_read``).
    Masks: MVTec AD masks are resized with nearest neighbours; normal images get all-False masks.
    If any anomalous image has no mask file (and always for the other layouts), ``masks`` is None:
    an all-False mask would claim that the image has no anomalous pixel.
    Images are kept in folder order: normal ones first, then each defect folder in name order.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is a file; load_folder needs a folder of image folders")
    image_size = check_int(image_size, "image_size", MIN_IMAGE_SIZE)
    normal, anomalous, layout = _find_files(root, normal_classes)
    if not normal:
        raise ValueError(f"only anomalous images in {root} ({layout} layout): no normal images found")
    if not anomalous:
        raise ValueError(f"only normal images in {root} ({layout} layout): no anomalous images found; "
                         f"LEA-Net needs both classes")

    paths = normal + [path for path, _ in anomalous]
    images, conversions = [], collections.Counter()
    for path in paths:
        image, conversion = _read(path)
        images.append(np.clip(resize_image(image, image_size), 0, 1))  # interpolation can overshoot 1 by a rounding error
        conversions[conversion] += 1
    said = [f"{conversions[kind]} {kind} image(s) ({how})" for kind, how in CONVERSIONS.items() if conversions[kind]]
    if said:
        warnings.warn(f"load_folder converted {' and '.join(said)} to RGB in {root}", stacklevel=2)

    return AnomalyDataset(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor([0] * len(normal) + [1] * len(anomalous), dtype=torch.int64),
        masks=_mvtec_masks(root, len(normal), anomalous, image_size) if layout == "MVTec AD" else None,
        name=root.name, defect_types=["good"] * len(normal) + [defect for _, defect in anomalous],
        sources=[str(path) for path in paths])


def _mvtec_masks(root, normal_count, anomalous, image_size):
    """All-False masks for the normal images, then the anomalous images' ground truth; None if any is missing."""
    mask_paths = [root / "ground_truth" / defect / f"{path.stem}_mask.png" for path, defect in anomalous]
    missing = [path for path in mask_paths if not path.is_file()]
    if not missing:
        return torch.cat([torch.zeros(normal_count, image_size, image_size, dtype=torch.bool),
                          torch.stack([_read_mask(path, image_size) for path in mask_paths])])
    if len(missing) < len(mask_paths):
        warnings.warn(f"{len(missing)} of {len(mask_paths)} anomalous images in {root} have no mask file "
                      f"(e.g. {missing[0]}); masks set to None", stacklevel=3)  # at load_folder's caller
    return None
