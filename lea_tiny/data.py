"""The data: colour anomaly data sets that need no download, and real ones read from disk.

LEA-Net is evaluated on imbalanced data sets with about one anomalous image for every three or
four normal ones (paper, Table 2: Retina 98 : 337, Potato 50 : 152, Cloud 100 : 300, Leather
92 : 277, Wood 60 : 266), all resized to 256 x 256 (Section 4-1). Every data set here is an
``AnomalyDataset``: images (N, 3, H, W) in [0, 1], labels (1 = anomalous) and, where known, masks
of the anomalous pixels.

Read top to bottom:
    AnomalyDataset   the container every other module reads (subset, counts, summary)
    drawing helpers  pixel grid, smooth noise, soft irregular blobs, colour blending in L*a*b*
    "retina"         patches of a real fundus photograph, with drawn diabetic-retinopathy lesions
    "leaves"         procedurally drawn leaves, with drawn blight lesions
    make_dataset     either of the two, imbalanced like Table 2, shuffled, seeded
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
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color, data, io

from lea_tiny.checks import check_dtype, check_images, check_int, check_labels, check_number, check_seed

EMBEDDED_DATASETS = ("retina", "leaves")
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
# Drawing helpers. Shapes live in continuous coordinates (x, y) in [-1, 1] over the image, so a
# seed draws the same scene at every image size; only the sampling changes.
# ---------------------------------------------------------------------------------------------------

def _grid(size):
    """Pixel-centre coordinates x (left to right) and y (top to bottom) in [-1, 1], each (size, size)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(centres, centres, indexing="xy")


def _resize(image, size):
    """(h, w, c) float array -> (size, size, c), bilinear with anti-aliasing (area-weighted when shrinking)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


def _smooth_noise(rng, size, cells):
    """A smooth random field of about unit amplitude: a cells x cells grid of normals, upsampled bicubically."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _window(centres, middle, reach):
    """The slice of sorted pixel-centre coordinates within ``reach`` of ``middle``."""
    return slice(np.searchsorted(centres, middle - reach), np.searchsorted(centres, middle + reach, "right"))


def _blob(rng, x, y, centre, radius, softness, aspect=1.0, wobble=0.25):
    """A soft irregular blob: alpha 1 inside, 0 outside, exactly 0.5 on its boundary.

    The boundary is a circle (an ellipse of ``aspect``, at a random angle) whose radius wobbles
    with the angle (random harmonics 2..5), which makes blotches rather than discs. Always draws
    the same number of random numbers, so sizes can change without changing the rest of a scene.
    Computed only in the window the blob can reach, which keeps many small spots cheap.
    """
    angle = rng.uniform(0, np.pi)
    amplitudes = wobble * rng.uniform(0, 1, 4) / np.arange(2, 6)
    phases = rng.uniform(0, 2 * np.pi, 4)
    reach = radius * (1 + amplitudes.sum()) + softness / 2
    window = _window(y[:, 0], centre[1], reach), _window(x[0], centre[0], reach)
    dx, dy = x[window] - centre[0], y[window] - centre[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = (-dx * np.sin(angle) + dy * np.cos(angle)) * aspect
    theta = np.arctan2(across, along)
    boundary = radius * (1 + sum(amplitude * np.cos(harmonic * theta + phase)
                                 for harmonic, amplitude, phase in zip(range(2, 6), amplitudes, phases)))
    alpha = np.zeros(x.shape, np.float32)
    alpha[window] = _smoothstep((boundary - np.hypot(along, across)) / softness + 0.5)
    return alpha


def _blend_lab(lab, alpha, target, lightness_weight):
    """Move L*a*b* pixels towards ``target`` by ``alpha``: a*, b* all the way, L* by ``lightness_weight``.

    lab (H, W, 3); alpha (H, W) in [0, 1]; target (3,) or (H, W, 3). Keeping most of L* keeps the
    texture of the lightness: the change is a change of colour, which is what LEA-Net looks for.
    """
    weights = alpha[..., None] * np.array([lightness_weight, 1.0, 1.0], dtype=np.float32)
    return lab + weights * (np.asarray(target, dtype=np.float32) - lab)


def _difficulty_scales(difficulty):
    """(size scale, contrast) of the lesions: big and strong at difficulty 0, tiny and faint at 1.

    Sizes are multiplied by 1.8 at difficulty 0, 0.9 at 0.5 and 0.45 at 1 (a factor 4 over the
    range); the colour shift is applied in full at 0 and a quarter of it at 1.
    """
    return 1.8 * 0.25 ** difficulty, 1.0 - 0.75 * difficulty


def _paint(rgb, lesions, contrast):
    """Blend lesions (shape alpha, strength, target L*a*b*, lightness weight) into an RGB image.

    Returns the painted RGB and the lesion mask: where any lesion's shape alpha exceeds 0.5 (the
    shape's boundary). A lesion smaller than a pixel can miss every pixel centre; then the one
    pixel where the lesions are strongest is marked, so every anomalous image has a true pixel.
    """
    lab = color.rgb2lab(rgb)
    for shape, strength, target, lightness_weight in lesions:
        lab = _blend_lab(lab, contrast * strength * shape, target, lightness_weight)
    union = np.max([shape for shape, *_ in lesions], axis=0)
    mask = union > 0.5
    mask.flat[np.argmax(union)] = True
    return np.clip(color.lab2rgb(lab), 0, 1).astype(np.float32), mask


# ---------------------------------------------------------------------------------------------------
# "retina": patches of a real fundus photograph with drawn diabetic-retinopathy lesions (stand-in for DR2)
# ---------------------------------------------------------------------------------------------------

RETINA_PATCH = (280, 420)   # side of a patch in the 1411 px photograph: vessels stay visible at 64 px
RETINA_STRIDE = 8           # patch corners are drawn from a grid of this spacing (pixels of the photograph)
HAEMORRHAGE_LAB = (28.0, 60.0, 28.0)   # dark crimson: redder, less orange than the fundus (about 54, 52, 42)
EXUDATE_LAB = (85.0, 2.0, 72.0)        # bright waxy yellow
COTTON_WOOL_LAB = (85.0, 8.0, 18.0)    # pale greyish white


@functools.lru_cache(maxsize=1)
def _retina_photo():
    """skimage's fundus photograph as float32 (1411, 1411, 3), and an integral image of its usable disc.

    The disc is where the photograph is bright (the camera's field of view), shrunk by 2 % of the
    photograph so that the dark rim of the field stays out of patches.
    """
    photo = data.retina().astype(np.float32) / 255
    disc = photo.mean(-1) > 0.12
    margin = photo.shape[0] // 50
    rows, cols = np.nonzero(disc)
    centre, radius = np.array([rows.mean(), cols.mean()]), (rows.max() - rows.min()) / 2 - margin
    yy, xx = np.mgrid[:photo.shape[0], :photo.shape[1]]
    disc &= np.hypot(yy - centre[0], xx - centre[1]) < radius
    integral = np.pad(disc.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return photo, integral


@functools.lru_cache(maxsize=None)
def _retina_halved(times):
    """The photograph halved ``times`` times (means of 2 x 2 pixels): small images are cut from small copies."""
    if times == 0:
        return _retina_photo()[0]
    finer = _retina_halved(times - 1)
    half = finer.shape[0] // 2
    return finer[:2 * half, :2 * half].reshape(half, 2, half, 2, 3).mean((1, 3))


def _retina_patch(rng, size):
    """A random patch lying fully inside the fundus disc, randomly flipped and turned, resized to ``size``."""
    photo, integral = _retina_photo()
    side = int(rng.integers(*RETINA_PATCH))
    starts = np.arange(0, photo.shape[0] - side, RETINA_STRIDE)
    top, left = np.meshgrid(starts, starts, indexing="ij")
    inside = (integral[top + side, left + side] - integral[top, left + side]
              - integral[top + side, left] + integral[top, left]) == side * side
    choice = rng.integers(inside.sum())
    row, col = top[inside][choice], left[inside][choice]
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    exposure = rng.uniform(0.92, 1.08)  # a little variation in illumination between "photographs"
    halvings = min(int(np.log2(side / size)), 3) if side > size else 0  # 2^3 divides RETINA_STRIDE
    small_row, small_col, small_side = row >> halvings, col >> halvings, side >> halvings
    patch = _retina_halved(halvings)[small_row:small_row + small_side, small_col:small_col + small_side]
    image = np.rot90(_resize(patch, size), turns)
    image = np.clip((image[:, ::-1] if flip else image) * exposure, 0, 1)
    return image, f"retina() patch at row {row}, col {col}, side {side} px, turned {90 * turns} deg, " \
                  f"{'mirrored, ' if flip else ''}exposure {exposure:.2f}"


def _retina_lesions(rng, size, size_scale):
    """The lesions of one anomalous fundus patch, as (shape alpha, strength, target L*a*b*, lightness weight).

    Blot haemorrhages (dark-crimson blotches, each a blob with ragged satellites), a cluster of small
    yellow hard exudates, and soft pale cotton-wool spots; every image gets at least one kind.
    """
    x, y = _grid(size)
    pixel = 2.0 / size  # one pixel, in grid units
    kinds = rng.uniform(size=3) < (0.7, 0.45, 0.3)
    kinds[rng.integers(3)] |= not kinds.any()
    lesions = []
    if kinds[0]:
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform(-0.7, 0.7, 2)
            radius = max(rng.uniform(0.06, 0.13) * size_scale, pixel)
            shape = _blob(rng, x, y, centre, radius, 0.3 * radius + pixel, aspect=rng.uniform(1, 1.8))
            for _ in range(3):
                offset = rng.normal(0, 0.7, 2) * radius
                satellite = max(rng.uniform(0.3, 0.6) * radius, pixel)
                shape = np.maximum(shape, _blob(rng, x, y, centre + offset, satellite, 0.3 * satellite + pixel))
            mottling = 0.85 + 0.15 * np.tanh(_smooth_noise(rng, size, 12))
            lesions.append((shape, mottling, np.array(HAEMORRHAGE_LAB) + rng.normal(0, (3, 4, 4)), 0.45))
    if kinds[1]:
        centre, spread = rng.uniform(-0.6, 0.6, 2), rng.uniform(0.08, 0.2)
        shape = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(6, 18))):
            radius = max(rng.uniform(0.012, 0.035) * size_scale, pixel)
            spot = _blob(rng, x, y, centre + rng.normal(0, spread, 2), radius, 0.2 * radius + pixel)
            shape = np.maximum(shape, spot)
        lesions.append((shape, 1.0, np.array(EXUDATE_LAB) + rng.normal(0, (3, 3, 5)), 0.55))
    if kinds[2]:
        for _ in range(int(rng.integers(1, 3))):
            centre = rng.uniform(-0.7, 0.7, 2)
            radius = max(rng.uniform(0.05, 0.1) * size_scale, pixel)
            shape = _blob(rng, x, y, centre, radius, 0.8 * radius + pixel, aspect=rng.uniform(1, 1.6), wobble=0.4)
            fluff = 0.7 + 0.2 * np.tanh(_smooth_noise(rng, size, 24))
            lesions.append((shape, fluff, np.array(COTTON_WOOL_LAB), 0.45))
    names = [name for name, present in zip(("haemorrhage", "exudates", "cotton_wool"), kinds) if present]
    return lesions, "+".join(names)


# ---------------------------------------------------------------------------------------------------
# "leaves": drawn leaves with blight lesions (stand-in for PlantVillage Potato)
# ---------------------------------------------------------------------------------------------------

EARLY_BLIGHT_LAB = ((38.0, 12.0, 32.0), (52.0, 10.0, 40.0))  # dark and light brown rings
LATE_BLIGHT_LAB = (28.0, 4.0, 14.0)                          # dark olive-brown, water-soaked
HALO_LAB = (78.0, -8.0, 70.0)                                # chlorotic yellow
VEIN_HALF_WIDTH = 0.006                                      # secondary veins, in units of the leaf's half-length


def _hsv_to_rgb(hue, saturation, value):
    return color.hsv2rgb(np.array([[[hue, saturation, value]]], dtype=np.float32))[0, 0]


def _half_width(t, shape):
    """The leaf's half-width at t in (0, 1) from base to tip: t^p (1 - t)^q, ``shape["width"]`` at its widest.

    p < 1 rounds the base, q >= 1 points the tip. In units of the leaf's half-length.
    """
    p, q = shape["p"], shape["q"]
    widest = p / (p + q)
    return shape["width"] * t ** p * (1 - t) ** q / (widest ** p * (1 - widest) ** q)


def _leaf_point(shape, t, across):
    """Grid coordinates of the point at t along the midrib and ``across`` (-1..1) of the half-width."""
    u, v = 2 * t - 1, across * _half_width(t, shape)
    cos, sin = np.cos(shape["angle"]), np.sin(shape["angle"])
    return shape["centre"] + shape["length"] * np.array([u * cos - v * sin, u * sin + v * cos])


def _leaf(rng, size):
    """One leaf on a PlantVillage-like grey background: rgb (size, size, 3), leaf alpha, leaf shape.

    The leaf is an implicit shape in its own frame: u runs along the midrib (base u=-1, tip u=+1,
    in units of the half-length), v across it, t = (u + 1) / 2.
    """
    x, y = _grid(size)
    pixel = 2.0 / size
    shape = dict(angle=rng.uniform(0, 2 * np.pi), length=rng.uniform(0.62, 0.85), width=rng.uniform(0.4, 0.62),
                 centre=rng.uniform(-0.08, 0.08, 2), p=rng.uniform(0.5, 0.8), q=rng.uniform(0.9, 1.4))
    dx, dy = x - shape["centre"][0], y - shape["centre"][1]
    cos, sin = np.cos(shape["angle"]), np.sin(shape["angle"])
    u, v = (dx * cos + dy * sin) / shape["length"], (-dx * sin + dy * cos) / shape["length"]
    t = np.clip((u + 1) / 2, 1e-6, 1 - 1e-6)
    half_width = _half_width(t, shape)
    half_width *= 1 + 0.04 * np.sin(2 * np.pi * rng.uniform(4, 8) * t + rng.uniform(0, 2 * np.pi))  # wavy margin
    edge = pixel / shape["length"]  # one pixel, in leaf units
    blade = _smoothstep((half_width - np.abs(v)) / (1.5 * edge) + 0.5) * ((u > -1) & (u < 1))
    stalk = _smoothstep((0.012 - np.abs(v)) / (1.5 * edge) + 0.5) * ((u > -1.3) & (u <= -1))
    leaf = np.maximum(blade, stalk)

    # Veins: a midrib, and secondary veins that run out and towards the tip, fading at the margin.
    across = np.clip(np.abs(v) / np.maximum(half_width, 1e-6), 0, 1)
    midrib = _smoothstep((0.006 + 0.012 * (1 - t) - np.abs(v)) / edge + 0.5)
    veins_per_side, slope = rng.uniform(6, 9), rng.uniform(0.25, 0.45)
    phase = (t - slope * across ** 1.3) * veins_per_side + rng.uniform(0, 1)
    vein_distance = np.abs(phase - np.round(phase)) / veins_per_side * 2  # in leaf units, along u
    drawn_half_width = max(VEIN_HALF_WIDTH, 0.6 * edge)  # at least about a pixel wide, but then fainter:
    coverage = VEIN_HALF_WIDTH / drawn_half_width         # a thin vein only tints the pixel it crosses
    secondary = _smoothstep((drawn_half_width - vein_distance) / edge + 0.5) * coverage * (1 - across) ** 0.7
    veins = np.maximum(midrib, 0.8 * secondary * (t > 0.05)) * (u < 1)

    # Colour: a green of random hue, shaded darker towards the margin and along a light gradient.
    hue, saturation, value = rng.uniform(0.2, 0.33), rng.uniform(0.45, 0.75), rng.uniform(0.38, 0.6)
    green = _hsv_to_rgb(hue, saturation, value)
    vein_green = _hsv_to_rgb(hue - 0.03, saturation * 0.6, min(value * 1.35, 1))
    light = rng.uniform(-1, 1, 2)
    shade = 1 - 0.25 * across ** 2 + 0.12 * (light[0] * x + light[1] * y) + 0.05 * _smooth_noise(rng, size, 16)
    leaf_rgb = green * shade[..., None]
    leaf_rgb += veins[..., None] * (vein_green - leaf_rgb)

    # Background: light neutral grey with a gradient, darkened by the leaf's soft shadow.
    grey = rng.uniform(0.55, 0.8) * (1 + rng.uniform(-0.03, 0.03, 3))
    gradient = 1 + 0.08 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y)
    down, right = np.round(rng.uniform(0.02, 0.05, 2) * size / 2).astype(int)  # light from the upper left
    shadow = np.zeros_like(leaf)
    shadow[down:, right:] = leaf[:size - down, :size - right]
    shadow = _resize(_resize(shadow[..., None], max(size // 8, 4)), size)[..., 0]  # blurred
    background = grey * (gradient * (1 - 0.35 * shadow))[..., None]
    rgb = background + leaf[..., None] * (leaf_rgb - background)
    return np.clip(rgb, 0, 1).astype(np.float32), leaf, shape


def _leaf_lesions(rng, size, size_scale, leaf, shape):
    """Blight on one leaf: early-blight target spots with yellow halos, and/or a late-blight patch."""
    x, y = _grid(size)
    pixel = 2.0 / size
    kinds = rng.uniform(size=2) < (0.65, 0.45)
    kinds[rng.integers(2)] |= not kinds.any()
    on_leaf = (leaf > 0.5).astype(np.float32)
    lesions = []
    if kinds[0]:
        dark, pale = np.array(EARLY_BLIGHT_LAB)
        for _ in range(int(rng.integers(1, 6))):
            centre = _leaf_point(shape, rng.uniform(0.2, 0.8), rng.uniform(-0.7, 0.7))
            radius = max(rng.uniform(0.035, 0.08) * size_scale, pixel)
            spot = _blob(rng, x, y, centre, radius, 0.15 * radius + pixel, wobble=0.3)
            halo = _blob(rng, x, y, centre, 1.6 * radius, 0.8 * radius + pixel, wobble=0.3)
            rings = 0.5 + 0.5 * np.cos(2 * np.pi * np.hypot(x - centre[0], y - centre[1]) / (0.35 * radius))
            lesions.append((halo * on_leaf, 0.8, np.array(HALO_LAB), 0.3))
            lesions.append((spot * on_leaf, 1.0, dark + rings[..., None] * (pale - dark), 0.6))
    if kinds[1]:
        centre = _leaf_point(shape, rng.uniform(0.25, 0.85), rng.choice((-1, 1)) * rng.uniform(0.6, 1.0))
        radius = max(rng.uniform(0.1, 0.2) * size_scale, pixel)
        patch = _blob(rng, x, y, centre, radius, 0.25 * radius + pixel, aspect=rng.uniform(1, 1.6), wobble=0.5)
        border = _blob(rng, x, y, centre, 1.25 * radius, 0.4 * radius + pixel, wobble=0.5)
        mottling = 0.8 + 0.2 * np.tanh(_smooth_noise(rng, size, 10))
        lesions.append((border * on_leaf, 0.6, np.array(HALO_LAB) * (0.9, 1, 0.8), 0.3))
        lesions.append((patch * on_leaf, mottling, np.array(LATE_BLIGHT_LAB), 0.6))
    names = [name for name, present in zip(("early_blight", "late_blight"), kinds) if present]
    return lesions, "+".join(names)


# ---------------------------------------------------------------------------------------------------
# make_dataset
# ---------------------------------------------------------------------------------------------------

def _draw_image(name, rng, size, anomalous, difficulty):
    """One image of an embedded data set: rgb (size, size, 3), mask (size, size), defect type, source."""
    if name == "retina":
        rgb, source = _retina_patch(rng, size)
    else:
        rgb, leaf, shape = _leaf(rng, size)
        source = "drawn leaf"
    if not anomalous:
        return rgb, np.zeros((size, size), bool), "good", source
    size_scale, contrast = _difficulty_scales(difficulty)
    if name == "retina":
        lesions, defect = _retina_lesions(rng, size, size_scale)
    else:
        lesions, defect = _leaf_lesions(rng, size, size_scale, leaf, shape)
    return *_paint(rgb, lesions, contrast), defect, source


def make_dataset(name, n_normal=90, n_anomalous=30, image_size=256, seed=0, difficulty=0.5):
    """An embedded colour anomaly data set, imbalanced like Table 2 and shuffled; no download.

    name          "retina" (fundus patches with diabetic-retinopathy lesions, stand-in for DR2) or
                  "leaves" (drawn leaves with blight, stand-in for PlantVillage Potato)
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
        raise ValueError(f"unknown data set {name!r}; choose one of {EMBEDDED_DATASETS}, "
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
    drawn = [_draw_image(name, np.random.default_rng((seed, labels[i], index_in_class[i])), image_size,
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
        images.append(np.clip(_resize(image, image_size), 0, 1))  # interpolation can overshoot 1 by a rounding error
        conversions[conversion] += 1
    said = [f"{conversions[kind]} {kind} image(s) ({how})" for kind, how in CONVERSIONS.items() if conversions[kind]]
    if said:
        warnings.warn(f"load_folder converted {' and '.join(said)} to RGB in {root}", stacklevel=2)

    masks = None
    if layout == "MVTec AD":
        mask_paths = [root / "ground_truth" / defect / f"{path.stem}_mask.png" for path, defect in anomalous]
        missing = [path for path in mask_paths if not path.is_file()]
        if not missing:
            masks = torch.cat([torch.zeros(len(normal), image_size, image_size, dtype=torch.bool),
                               torch.stack([_read_mask(path, image_size) for path in mask_paths])])
        elif len(missing) < len(mask_paths):
            warnings.warn(f"{len(missing)} of {len(mask_paths)} anomalous images in {root} have no mask file "
                          f"(e.g. {missing[0]}); masks set to None", stacklevel=2)
    return AnomalyDataset(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor([0] * len(normal) + [1] * len(anomalous), dtype=torch.int64),
        masks=masks, name=root.name,
        defect_types=["good"] * len(normal) + [defect for _, defect in anomalous],
        sources=[str(path) for path in paths])
