"""CIE L*a*b* and the CIEDE2000 colour difference, in torch.

LEA-Net's colour anomaly map (paper, Sec. 3-1) is the CIEDE2000 difference between an image and
its re-colouring by a U-Net that only ever saw normal images. This module supplies the colour
science behind it:

* ``rgb_to_lab`` / ``lab_to_rgb``: sRGB (D65 white, 2 degree observer) to CIE L*a*b* and back,
  with exactly the constants and conventions of ``skimage.color.rgb2lab`` / ``lab2rgb``;
* ``delta_e76``: the 1976 colour difference, plain Euclidean distance in L*a*b*;
* ``ciede2000``: the CIEDE2000 colour difference of Sharma, Wu & Dalal (2005), whose equation
  numbers the comments cite (``# Eq. 7``);
* ``SHARMA_2005_PAIRS``: the 34 published test pairs of that paper, which tests and tutorials check
  against.

All functions take finite tensors shaped (..., 3, H, W), float32 or float64 (half precision is
computed in float32), on any device, and are differentiable (finite gradients everywhere, also for
identical colours and greys). NaN or inf is refused with a ValueError rather than passed on.

Departures, and why:

* The released LEA-Net code converts its already-L*a*b* arrays "from RGB to L*a*b*" a second time
  before taking CIEDE2000, so its map is not the colour difference the paper describes. Here
  ``ciede2000`` receives true L*a*b*.
* The textbook CIEDE2000 works with hue *angles* h' and branches on whether two hues are more than
  180 degrees apart. Exactly at 180 degrees (Sharma's pair 14) the branch then hangs on the sign of a
  rounding error, which in float32 can go either way; the wrong way moves the mean hue by 180
  degrees and gives a wrong answer (tutorial 01 shows one). We compute the same formula
  from hue *directions* (unit vectors in the a'b' plane) instead: the branch becomes the sign of a
  cross product, which is exact for the tie, and the trigonometry of the hue terms reduces to one
  atan2, one exp and one sin per pixel, which is also what makes it fast. Tutorial 01 derives the
  textbook angle form term by term and checks it against this one. (scikit-image's angle form gets
  some exact ties wrong even in float64; tests/test_ciede.py has four.)
* Without autograd, the computation runs through ``torch.compile`` (one fused kernel) when the input
  is large enough to repay the compilation; ``COMPILE = False`` switches that off. Both paths give
  the same numbers up to float rounding; if compilation fails (no C compiler, unsupported platform)
  we warn once and stay eager.
"""

import math
import warnings

import torch

from lea_tiny.checks import check_finite, check_number

COMPILE = True
"""Run large no-grad inputs through ``torch.compile``. Set to False to stay eager (e.g. to debug)."""

COMPILE_MIN_PIXELS = 1 << 20
"""Compile only for inputs with at least this many pixels: compiling costs seconds, once per process."""


# ---------------------------------------------------------------------------------------------------
# sRGB <-> CIE L*a*b*  (the constants of skimage.color, which follow IEC 61966-2-1 and CIE 15)
# ---------------------------------------------------------------------------------------------------

# Linear sRGB -> CIE XYZ, D65 (skimage's matrix, kept to its six digits so results agree).
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
RGB_FROM_XYZ = tuple(map(tuple, torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64)).tolist()))
D65_WHITE = (0.95047, 1.0, 1.08883)  # XYZ of the reference white, 2 degree observer

# CIE's f(t) = cbrt(t) above (6/29)^3, linear below; skimage uses these rounded constants.
_LAB_EPSILON = 0.008856
_LAB_SLOPE = 7.787
_LAB_OFFSET = 16.0 / 116.0
_LAB_F_EPSILON = 0.2068966  # f(_LAB_EPSILON), where the inverse switches branch


def _check_image(tensor, name):
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor shaped (..., 3, H, W), got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got dtype {tensor.dtype}; "
            f"convert 8-bit images with .float() / 255"
        )
    if tensor.dim() < 3 or tensor.shape[-3] != 3:
        raise ValueError(
            f"{name} must be shaped (..., 3, H, W) with 3 channels at dim -3, got shape {tuple(tensor.shape)}"
        )
    check_finite(tensor, name)
    if tensor.dtype in (torch.float16, torch.bfloat16):
        # Half precision has 3 significant digits: not enough for L* or for CIEDE2000.
        return tensor.float()
    return tensor


def _mix(matrix, planes):
    """Multiply a 3x3 matrix (nested tuples) with three colour planes."""
    return [row[0] * planes[0] + row[1] * planes[1] + row[2] * planes[2] for row in matrix]


def _power(x, exponent):
    """x ** exponent for x > 0, as 2 ** (exponent * log2 x): equal to float rounding, and on the CPU
    up to twice as fast as torch.pow with a fractional exponent."""
    return torch.exp2(exponent * torch.log2(x))


# Each step works on one colour plane at a time, so that compiled it stays one loop over pixels.
# The clamps keep the branch that torch.where discards finite, so autograd never meets 0 * nan.


def _srgb_decode(c):
    """sRGB value -> linear light (IEC 61966-2-1): a line near black, a 2.4 power above."""
    return torch.where(c > 0.04045, _power((c.clamp(min=0.04045) + 0.055) / 1.055, 2.4), c / 12.92)


def _srgb_encode(c):
    """Linear light -> sRGB value, the inverse of ``_srgb_decode``."""
    return torch.where(c > 0.0031308, 1.055 * _power(c.clamp(min=0.0031308), 1 / 2.4) - 0.055, 12.92 * c)


def _lab_f(t):
    """CIE's f: the cube root that makes L*a*b* perceptual, with a line near 0."""
    return torch.where(t > _LAB_EPSILON, _power(t.clamp(min=_LAB_EPSILON), 1 / 3), _LAB_SLOPE * t + _LAB_OFFSET)


def _lab_f_inverse(f):
    return torch.where(f > _LAB_F_EPSILON, f**3, (f - _LAB_OFFSET) / _LAB_SLOPE)


def _rgb_to_lab_planes(rgb):
    """rgb: (B, 3, P) -> lab: (B, 3, P); the body of ``rgb_to_lab``."""
    xyz = _mix(XYZ_FROM_RGB, [_srgb_decode(c) for c in rgb.unbind(1)])
    fx, fy, fz = (_lab_f(value / white) for value, white in zip(xyz, D65_WHITE))
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def _lab_to_rgb_planes(lab):
    """lab: (B, 3, P) -> rgb: (B, 3, P); the body of ``lab_to_rgb``."""
    L, a, b = lab.unbind(1)
    fy = (L + 16.0) / 116.0
    # skimage sets a negative f(Z) to 0 (a b* too large for that L*); we do the same.
    f = (a / 500.0 + fy, fy, (fy - b / 200.0).clamp(min=0.0))
    xyz = [white * _lab_f_inverse(value) for value, white in zip(f, D65_WHITE)]
    return torch.stack([_srgb_encode(c).clamp(0.0, 1.0) for c in _mix(RGB_FROM_XYZ, xyz)], dim=1)


def rgb_to_lab(rgb):
    """sRGB in [0, 1] -> CIE L*a*b* (D65, 2 degree observer), as ``skimage.color.rgb2lab``.

    rgb: floating-point tensor (..., 3, H, W). Returns the same shape: L* in [0, 100], a* and b*
    roughly in [-128, 127].

    Values outside [0, 1] are not clipped: the sRGB decoding is applied as defined on the whole real
    line (linear below 0.04045, so negatives stay negative; the power law above, so values above 1
    become brighter than white), exactly as skimage does. Clip first if your data can overshoot.
    """
    return rgb_to_lab_unchecked(_check_image(rgb, "rgb"))


def rgb_to_lab_unchecked(rgb):
    """``rgb_to_lab`` without its checks, for float32 images checked once: no pass over them per training batch."""
    return _run(_rgb_to_lab_planes, rgb)


def lab_to_rgb(lab):
    """CIE L*a*b* (D65, 2 degree observer) -> sRGB in [0, 1], as ``skimage.color.lab2rgb``.

    lab: floating-point tensor (..., 3, H, W). Returns the same shape. Many L*a*b* triples have no
    sRGB colour (they are out of gamut); like skimage, the result is clipped to [0, 1], so
    ``lab_to_rgb(rgb_to_lab(rgb))`` gives ``rgb`` back only for ``rgb`` inside [0, 1].
    """
    lab = _check_image(lab, "lab")
    return _run(_lab_to_rgb_planes, lab)


# ---------------------------------------------------------------------------------------------------
# Colour differences
# ---------------------------------------------------------------------------------------------------

# Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula: implementation notes, supplementary
# test data, and mathematical observations", Color Res. Appl. 30(1):21-30, 2005, Table 1.
# Rows: (L1, a1, b1, L2, a2, b2, dE00) with kL = kC = kH = 1; dE00 published to 4 decimals.
# Pairs 7-16 probe the hue branches (greys, hues 180 degrees apart); pairs 25-34 are real samples.
SHARMA_2005_PAIRS = (
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
)


def _check_pair(lab1, lab2):
    lab1, lab2 = _check_image(lab1, "lab1"), _check_image(lab2, "lab2")
    if lab1.shape != lab2.shape:
        raise ValueError(f"lab1 and lab2 must have the same shape, got {tuple(lab1.shape)} and {tuple(lab2.shape)}")
    if lab1.device != lab2.device:
        raise ValueError(f"lab1 and lab2 must be on the same device, got {lab1.device} and {lab2.device}")
    dtype = torch.promote_types(lab1.dtype, lab2.dtype)
    return lab1.to(dtype), lab2.to(dtype)


def delta_e76(lab1, lab2):
    """CIE 1976 colour difference: the Euclidean distance in L*a*b*. (..., 3, H, W) x2 -> (..., H, W).

    Simple, but it over-weights differences between saturated colours and under-weights them near
    grey; CIEDE2000 corrects that, and more (tutorial 01).
    """
    lab1, lab2 = _check_pair(lab1, lab2)
    return _sqrt0(((lab1 - lab2) ** 2).sum(dim=-3))


def _sqrt0(x):
    """sqrt that is 0 with gradient 0 where x <= 0 (plain sqrt has an infinite gradient at 0).

    Written with ``x <= 0`` rather than ``x > 0`` so that a NaN stays NaN instead of becoming 0.
    """
    not_positive = x <= 0
    return torch.where(not_positive, 0.0, torch.sqrt(torch.where(not_positive, 1.0, x)))


def _unit(a, b, length):
    """(a, b) / length, and (0, 0) where length is 0: the hue direction of a colour, none for greys."""
    inverse = torch.where(length > 0, 1.0 / torch.where(length > 0, length, 1.0), 0.0)
    return a * inverse, b * inverse


def _chroma_weight(chroma):
    """sqrt(C^7 / (C^7 + 25^7)), the chroma dependence shared by G (Eq. 4) and R_C (Eq. 17)."""
    chroma7 = chroma**7
    return _sqrt0(chroma7 / (chroma7 + 25.0**7))


def ciede2000_planes(lab1, lab2, kL, kC, kH):
    """lab1, lab2: (B, 3, P) -> (B, P); the body of ``ciede2000``."""
    # Longer than lea_tiny's other functions on purpose: it is Sharma et al.'s Eqs. 2-22 in their
    # order, one block per group of equations, so that it reads beside the paper.
    L1, a1, b1 = lab1.unbind(1)
    L2, a2, b2 = lab2.unbind(1)

    # Eqs. 2-6: stretch a* near the grey axis, then chroma C' in the stretched plane.
    G = 0.5 * (1.0 - _chroma_weight(0.5 * (_sqrt0(a1 * a1 + b1 * b1) + _sqrt0(a2 * a2 + b2 * b2))))
    a1, a2 = (1.0 + G) * a1, (1.0 + G) * a2
    C1, C2 = _sqrt0(a1 * a1 + b1 * b1), _sqrt0(a2 * a2 + b2 * b2)

    # Eqs. 7, 10, 11: the hue difference dh' = h2' - h1', taken the short way round the circle, and
    # dH' = 2 sqrt(C1' C2') sin(dh'/2). With hue directions u = (a', b') / C' the chord length
    # is |u2 - u1| = 2 |sin(dh'/2)|, and the sign of dh' is the sign of the cross product u1 x u2:
    # no angles, no 360-degree wrap. Greys (C' = 0) have no direction and, as Eq. 10 says, dH' = 0.
    u1a, u1b = _unit(a1, b1, C1)
    u2a, u2b = _unit(a2, b2, C2)
    cross = a1 * b2 - b1 * a2
    # Hues exactly opposite (dh' = +-180 degrees, Sharma's pairs 13-15) are the one case where the
    # short way round is ambiguous; Sharma's rule then takes dh' = +180 when h1' < 180 degrees,
    # else -180. "Exactly" means: to within rounding of the cross product (a few ulps of C1' C2').
    opposite = (cross.abs() <= 8 * torch.finfo(cross.dtype).eps * C1 * C2) & (a1 * a2 + b1 * b2 < 0)
    h1_below_180 = (b1 > 0) | ((b1 == 0) & (a1 > 0))
    turn = torch.where(opposite, torch.where(h1_below_180, 1.0, -1.0), torch.sign(cross))
    du_a, du_b = u2a - u1a, u2b - u1b
    dH = turn * _sqrt0(C1 * C2) * _sqrt0(du_a * du_a + du_b * du_b)

    # Eq. 14: the mean hue h' bar bisects the short arc from u1 to u2. The bisector is u1 + u2
    # (length 2 cos(dh'/2)) plus (u2 - u1) turned by -90 degrees (length 2 |sin(dh'/2)|): their sum
    # never vanishes, so it is accurate also for hues 180 degrees apart. With one grey, it is the
    # other colour's hue (Eq. 14's "h1' + h2'"); with two greys it is 0 and does not matter.
    mean_a = u1a + u2a + turn * du_b
    mean_b = u1b + u2b - turn * du_a
    mean_length = _sqrt0(mean_a * mean_a + mean_b * mean_b)
    cos_h, sin_h = _unit(mean_a, mean_b, mean_length)
    cos_h = torch.where(mean_length > 0, cos_h, 1.0)

    # Eq. 15: T, with the cosines of multiples of h' bar from angle-addition formulas.
    cos_2h, sin_2h = cos_h * cos_h - sin_h * sin_h, 2.0 * sin_h * cos_h
    cos_3h, sin_3h = cos_2h * cos_h - sin_2h * sin_h, sin_2h * cos_h + cos_2h * sin_h
    cos_4h, sin_4h = cos_2h * cos_2h - sin_2h * sin_2h, 2.0 * sin_2h * cos_2h
    T = (
        1.0
        - 0.17 * (cos_h * math.cos(math.radians(30)) + sin_h * math.sin(math.radians(30)))
        + 0.24 * cos_2h
        + 0.32 * (cos_3h * math.cos(math.radians(6)) - sin_3h * math.sin(math.radians(6)))
        - 0.20 * (cos_4h * math.cos(math.radians(63)) + sin_4h * math.sin(math.radians(63)))
    )

    # Eqs. 12, 13, 16-21: weights and the rotation term. Eq. 16 needs h' bar in degrees, in [0, 360).
    # atan2 gets 0 for two greys (where h' bar is 0) through a safe denominator (finite gradient).
    mean_hue = torch.rad2deg(torch.atan2(mean_b, torch.where(mean_length > 0, mean_a, 1.0)))
    mean_hue = torch.where(mean_hue < 0, mean_hue + 360.0, mean_hue)
    L_mean_50 = (0.5 * (L1 + L2) - 50.0) ** 2
    C_mean = 0.5 * (C1 + C2)
    S_L = 1.0 + 0.015 * L_mean_50 / torch.sqrt(20.0 + L_mean_50)  # Eq. 18
    S_C = 1.0 + 0.045 * C_mean  # Eq. 19
    S_H = 1.0 + 0.015 * C_mean * T  # Eq. 20
    rotation = math.radians(60.0) * torch.exp(-(((mean_hue - 275.0) / 25.0) ** 2))  # 2 dtheta, Eq. 16
    R_T = -torch.sin(rotation) * 2.0 * _chroma_weight(C_mean)  # Eqs. 17, 21

    lightness = (L2 - L1) / (kL * S_L)
    chroma = (C2 - C1) / (kC * S_C)
    hue = dH / (kH * S_H)
    return _sqrt0(lightness**2 + chroma**2 + hue**2 + R_T * chroma * hue)  # Eq. 22


def ciede2000(lab1, lab2, kL=1, kC=1, kH=1):
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005) per pixel. (..., 3, H, W) x2 -> (..., H, W).

    lab1, lab2: L*a*b* tensors of the same shape (see ``rgb_to_lab``). kL, kC, kH: the parametric
    weights of lightness, chroma and hue (1 for the reference conditions). Agrees with
    ``skimage.color.deltaE_ciede2000`` and with all 34 published test pairs (``SHARMA_2005_PAIRS``)
    to 1e-4, in float32 and float64.
    """
    lab1, lab2 = _check_pair(lab1, lab2)
    weights = [check_number(k, name, above=0) for name, k in (("kL", kL), ("kC", kC), ("kH", kH))]
    return _run(ciede2000_planes, lab1, lab2, *weights)


# ---------------------------------------------------------------------------------------------------
# Running the bodies: eager, or compiled into one fused kernel
# ---------------------------------------------------------------------------------------------------

# body -> its compiled kernel; after one failure everything runs eagerly (the tests reset both)
compiled_bodies = {}
compile_failed = False


def _run(body, *arguments):
    """Apply ``body`` to image tensors (..., 3, H, W) viewed as (B, 3, H*W); other arguments pass through.

    Eagerly, every line of ``body`` is one pass over memory; compiled, the whole body is one loop
    that keeps each pixel in registers. We compile only when nothing needs gradients (so autograd
    stays plain torch) and the input is big enough to repay the seconds compilation takes.
    """
    global compile_failed
    image = arguments[0]
    batch_shape, (height, width) = image.shape[:-3], image.shape[-2:]
    # One shape family, (B, 3, P), for every input, so that a few compiled kernels serve them all.
    flat = [x.reshape(math.prod(batch_shape), 3, height * width) if torch.is_tensor(x) else x for x in arguments]
    needs_grad = torch.is_grad_enabled() and any(torch.is_tensor(x) and x.requires_grad for x in arguments)
    result = None
    if COMPILE and not compile_failed and not needs_grad and image.numel() // 3 >= COMPILE_MIN_PIXELS:
        if body not in compiled_bodies:
            # realize_reads_threshold=1: keep every intermediate that is used twice as a value in the
            # fused loop rather than re-inlining its whole expression at each use; the defaults make
            # the kernel body of ciede2000 grow to thousands of operations (minutes to compile, and
            # slower to run). The first shape gets a kernel with the constants and sizes built in;
            # torch.compile makes the sizes symbolic if a second shape comes along.
            compiled_bodies[body] = torch.compile(body, options={"realize_reads_threshold": 1})
        try:
            with torch.no_grad():
                # detach(): plain tensors rather than views, so the kernel does not depend on the view's base
                result = compiled_bodies[body](*[x.detach() if torch.is_tensor(x) else x for x in flat])
        except Exception as error:  # noqa: BLE001 -- any compiler failure means: run eagerly
            compile_failed = True
            message = f"torch.compile failed, lea_tiny.ciede runs eagerly from now on ({error!r:.200})"
            warnings.warn(message, stacklevel=3)
    if result is None:
        result = body(*flat)
    return result.reshape(*batch_shape, *result.shape[1:-1], height, width)
