"""The embedded data sets: colour anomaly images drawn on the fly, so that no tutorial needs a download.

Each embedded data set is declared once, in ``EMBEDDED_DATASETS``: what it stands in for, how to
draw a normal image, and how to draw lesions on it. ``lea_tiny.data.make_dataset`` draws from it;
adding a data set is one entry there.

Read top to bottom:
    drawing helpers  pixel grid, smooth noise, soft irregular blobs, colour blending in L*a*b*
    "retina"         patches of a real fundus photograph, with drawn diabetic-retinopathy lesions
    "leaves"         procedurally drawn leaves, with drawn blight lesions
    EMBEDDED_DATASETS, draw_image   the registry, and one image of any of its data sets

Why stand-ins, and how they differ from the paper's data, is in ``lea_tiny.data``'s docstring.
"""

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color, data

# ---------------------------------------------------------------------------------------------------
# Drawing helpers. Shapes live in continuous coordinates (x, y) in [-1, 1] over the image, so a
# seed draws the same scene at every image size; only the sampling changes.
# ---------------------------------------------------------------------------------------------------

def _grid(size):
    """Pixel-centre coordinates x (left to right) and y (top to bottom) in [-1, 1], each (size, size)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(centres, centres, indexing="xy")


def resize_image(image, size):
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
    image = np.rot90(resize_image(patch, size), turns)
    image = np.clip((image[:, ::-1] if flip else image) * exposure, 0, 1)
    return image, f"retina() patch at row {row}, col {col}, side {side} px, turned {90 * turns} deg, " \
                  f"{'mirrored, ' if flip else ''}exposure {exposure:.2f}"


def _retina_normal(rng, size):
    """A normal fundus patch: rgb, where it was cut from, and no scene for the lesions to follow."""
    rgb, source = _retina_patch(rng, size)
    return rgb, source, None


def _retina_lesions(rng, size, size_scale, scene=None):
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
    shadow = resize_image(resize_image(shadow[..., None], max(size // 8, 4)), size)[..., 0]  # blurred
    background = grey * (gradient * (1 - 0.35 * shadow))[..., None]
    rgb = background + leaf[..., None] * (leaf_rgb - background)
    return np.clip(rgb, 0, 1).astype(np.float32), leaf, shape


def _leaf_normal(rng, size):
    """A healthy leaf: rgb, its source, and the scene (leaf alpha, leaf shape) its lesions must lie on."""
    rgb, leaf, shape = _leaf(rng, size)
    return rgb, "drawn leaf", (leaf, shape)


def _leaf_lesions(rng, size, size_scale, scene):
    """Blight on one leaf: early-blight target spots with yellow halos, and/or a late-blight patch."""
    leaf, shape = scene
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
# The registry, and one image of any embedded data set
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddedDataset:
    """One embedded data set: what it stands in for, and its two drawing functions.

    draw_normal(rng, size) -> (rgb (size, size, 3) in [0, 1], source, scene)
    draw_lesions(rng, size, size_scale, scene) -> ([(shape alpha, strength, target L*a*b*,
    lightness weight)], defect type); ``scene`` is what draw_normal returned for the lesions to follow.
    """
    stands_in_for: str
    draw_normal: Callable
    draw_lesions: Callable


EMBEDDED_DATASETS = {
    "retina": EmbeddedDataset("DR2 (diabetic retinopathy)", _retina_normal, _retina_lesions),
    "leaves": EmbeddedDataset("PlantVillage Potato (early and late blight)", _leaf_normal, _leaf_lesions),
}


def draw_image(name, rng, size, anomalous, difficulty):
    """One image of embedded data set ``name``: rgb (size, size, 3), mask (size, size), defect type, source."""
    dataset = EMBEDDED_DATASETS[name]
    rgb, source, scene = dataset.draw_normal(rng, size)
    if not anomalous:
        return rgb, np.zeros((size, size), bool), "good", source
    size_scale, contrast = _difficulty_scales(difficulty)
    lesions, defect = dataset.draw_lesions(rng, size, size_scale, scene)
    return *_paint(rgb, lesions, contrast), defect, source
