"""lea_tiny.ciede against trusted references: Sharma, Wu & Dalal's published CIEDE2000 test pairs,
scikit-image (rgb2lab, lab2rgb, deltaE_ciede2000, deltaE_cie76), and exact arithmetic for hues
exactly 180 degrees apart. Tolerances are stated at each test: 1e-4 where a published 4-decimal
table is the reference, float rounding elsewhere.
"""

import warnings

import numpy as np
import pytest
import torch
from skimage import color

from lea_tiny import ciede
from lea_tiny.ciede import SHARMA_2005_PAIRS, ciede2000, delta_e76, lab_to_rgb, rgb_to_lab

DTYPES = (torch.float32, torch.float64)


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    """Tests run eagerly (compiling takes seconds); test_compiled_path_* turns compilation back on."""
    monkeypatch.setattr(ciede, "COMPILE", False)


def channels_first(array, dtype=torch.float64):
    """numpy (N, H, W, 3) as skimage wants it -> torch (N, 3, H, W) as lea_tiny wants it."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).to(dtype)


def channels_last(tensor):
    return tensor.permute(0, 2, 3, 1).double().numpy()


def random_rgb(seed, shape=(3, 16, 16, 3), low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def sharma_pairs(dtype):
    """The table as two (3, 34, 1) "images" and the published differences (34,)."""
    table = torch.tensor(SHARMA_2005_PAIRS, dtype=torch.float64)
    lab1 = table[:, 0:3].T.reshape(3, 34, 1).to(dtype)
    lab2 = table[:, 3:6].T.reshape(3, 34, 1).to(dtype)
    return lab1, lab2, table[:, 6]


# --- CIEDE2000 against the published table ------------------------------------------------------


def test_sharma_table_is_the_published_one_according_to_skimage():
    # skimage is an independent implementation: a mistyped digit in SHARMA_2005_PAIRS would show here.
    table = np.array(SHARMA_2005_PAIRS)
    assert table.shape == (34, 7)
    np.testing.assert_allclose(color.deltaE_ciede2000(table[:, 0:3], table[:, 3:6]), table[:, 6], atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ciede2000_matches_all_34_sharma_pairs_to_1e4(dtype):
    lab1, lab2, expected = sharma_pairs(dtype)
    result = ciede2000(lab1, lab2)
    assert result.shape == (34, 1) and result.dtype == dtype
    error = (result[:, 0].double() - expected).abs()
    # The table has 4 decimals, so 5e-5 of the error is the table's own rounding.
    assert error.max() < 1e-4, f"pairs off by more than 1e-4: {(error >= 1e-4).nonzero().flatten() + 1}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_ciede2000_is_symmetric_on_sharma_pairs(dtype):
    lab1, lab2, _ = sharma_pairs(dtype)
    torch.testing.assert_close(ciede2000(lab1, lab2), ciede2000(lab2, lab1), atol=1e-4, rtol=0)


# Hues exactly 180 degrees apart: Sharma's rule takes dh' = +180 when h1' < 180 degrees, else -180,
# and the mean hue without the 360-degree wrap. Expected values: Sharma's Eqs. 1-22 evaluated with
# 50-digit mpmath, the tie decided exactly with fractions. skimage's float64 port gets all four
# wrong (its rounding of h2' - h1' picks the branch); pairs 13-15 of the table are the same test.
EXACT_OPPOSITE_HUES = [
    ((50.0, -4.0, 2.0), (40.0, 4.0, -2.0), 14.690675029488947),
    ((50.0, 4.0, -2.0), (40.0, -4.0, 2.0), 14.690675029488947),
    ((50.0, -3.0, 3.0), (40.0, 6.0, -6.0), 16.41935633189119),
    ((50.0, 3.0, -3.0), (40.0, -6.0, 6.0), 16.430636792162577),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("lab1", "lab2", "expected"), EXACT_OPPOSITE_HUES)
def test_ciede2000_follows_sharmas_rule_for_hues_exactly_opposite(lab1, lab2, expected, dtype):
    lab1, lab2 = (torch.tensor(lab, dtype=dtype).reshape(3, 1, 1) for lab in (lab1, lab2))
    result = ciede2000(lab1, lab2)
    assert abs(result.item() - expected) < 1e-4


# --- against scikit-image on random images -------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_rgb_to_lab_matches_skimage_also_outside_0_1(dtype, tolerance):
    # [-0.2, 1.2]: outside [0, 1] the sRGB curve is applied as defined, not clipped, as in skimage.
    rgb = random_rgb(0, low=-0.2, high=1.2)
    result = rgb_to_lab(channels_first(rgb, dtype))
    assert result.dtype == dtype
    np.testing.assert_allclose(channels_last(result), color.rgb2lab(rgb), atol=tolerance, rtol=0)
    clipped = rgb_to_lab(channels_first(rgb.clip(0, 1), dtype))
    assert (result - clipped).abs().max() > 1  # so the test above did exercise values outside [0, 1]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_lab_to_rgb_matches_skimage_and_clips_out_of_gamut_colours(dtype, tolerance):
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, (3, 16, 16)), *rng.uniform(-128, 127, (2, 3, 16, 16))], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about the negative Z values it clips
        expected = color.lab2rgb(lab)
    result = lab_to_rgb(channels_first(lab, dtype))
    assert result.min() >= 0 and result.max() <= 1
    assert ((expected == 0) | (expected == 1)).mean() > 0.3  # most random L*a*b* are out of gamut
    np.testing.assert_allclose(channels_last(result), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_lab_to_rgb_inverts_rgb_to_lab_inside_0_1(dtype, tolerance):
    rgb = channels_first(random_rgb(2), dtype)
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=tolerance, rtol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-9), (torch.float32, 2e-4)])
@pytest.mark.parametrize(("kL", "kC", "kH"), [(1, 1, 1), (2, 0.5, 1.5)])
def test_ciede2000_matches_skimage_on_random_images(dtype, tolerance, kL, kC, kH):
    lab1, lab2 = color.rgb2lab(random_rgb(3)), color.rgb2lab(random_rgb(4))
    # and a pair of images that differ only a little, the anomaly-map case
    lab3 = lab1 + np.random.default_rng(5).normal(0, 0.5, lab1.shape)
    for first, second in ((lab1, lab2), (lab1, lab3)):
        expected = color.deltaE_ciede2000(first, second, kL=kL, kC=kC, kH=kH)
        result = ciede2000(channels_first(first, dtype), channels_first(second, dtype), kL=kL, kC=kC, kH=kH)
        assert result.shape == expected.shape and result.dtype == dtype
        np.testing.assert_allclose(result.double().numpy(), expected, atol=tolerance, rtol=0)


def test_delta_e76_matches_skimage():
    lab1, lab2 = color.rgb2lab(random_rgb(6)), color.rgb2lab(random_rgb(7))
    result = delta_e76(channels_first(lab1), channels_first(lab2))
    np.testing.assert_allclose(result.numpy(), color.deltaE_cie76(lab1, lab2), atol=1e-12, rtol=0)


# --- shapes, dtypes, layouts ----------------------------------------------------------------------


def test_any_leading_dimensions_and_memory_layout():
    lab1 = rgb_to_lab(torch.rand(2, 4, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    lab2 = rgb_to_lab(torch.rand(2, 4, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert ciede2000(lab1, lab2).shape == (2, 4, 5, 6) and delta_e76(lab1, lab2).shape == (2, 4, 5, 6)
    single = ciede2000(lab1[0, 0], lab2[0, 0])
    assert single.shape == (5, 6)
    torch.testing.assert_close(single, ciede2000(lab1, lab2)[0, 0])
    flat1, flat2 = lab1.flatten(0, 1), lab2.flatten(0, 1)
    torch.testing.assert_close(
        ciede2000(flat1.contiguous(memory_format=torch.channels_last), flat2), ciede2000(flat1, flat2)
    )


def test_half_precision_is_computed_in_float32():
    rgb = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(rgb.half())
    assert lab.dtype == torch.float32
    torch.testing.assert_close(lab, rgb_to_lab(rgb.half().float()))


def test_nan_is_refused():
    # a broken input (say, a diverged network's output) must not turn into a clean-looking 0, nor pass on
    lab1 = torch.tensor([[50.0, float("nan")], [10.0, 10.0], [10.0, 10.0]]).reshape(3, 1, 2)
    lab2 = torch.tensor([[50.0, 50.0], [10.0, 10.0], [float("nan"), 10.0]]).reshape(3, 1, 2)
    for call in (lambda: ciede2000(lab1, lab2), lambda: delta_e76(lab1, lab2),
                 lambda: rgb_to_lab(torch.full((3, 1, 1), float("nan")))):
        with pytest.raises(ValueError, match="must be finite"):
            call()


# --- gradients ------------------------------------------------------------------------------------


def _finite_gradients(function, *inputs):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    function(*inputs).sum().backward()
    return all(torch.isfinite(x.grad).all() for x in inputs)


def test_gradients_are_finite_for_identical_near_identical_grey_and_opposite_colours():
    colour = [50.0, 20.0, -30.0]
    grey = [50.0, 0.0, 0.0]
    pairs = [
        (colour, colour),  # identical: sqrt at 0
        (colour, [50.0, 20.0 + 1e-6, -30.0]),  # near-identical
        (grey, grey),  # two greys: no hue at all, atan2(0, 0)
        (grey, [60.0, 0.0, 0.0]),  # greys of different lightness
        (grey, colour),  # one grey
        ([50.0, -4.0, 2.0], [40.0, 4.0, -2.0]),  # hues exactly opposite
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),  # black
    ]
    lab1 = torch.tensor([p[0] for p in pairs], dtype=torch.float64).T.reshape(3, len(pairs), 1)
    lab2 = torch.tensor([p[1] for p in pairs], dtype=torch.float64).T.reshape(3, len(pairs), 1)
    for dtype in DTYPES:
        assert _finite_gradients(ciede2000, lab1.to(dtype), lab2.to(dtype))
        assert _finite_gradients(delta_e76, lab1.to(dtype), lab2.to(dtype))
    assert ciede2000(lab1[:, :1], lab2[:, :1]).item() == 0 and delta_e76(lab1[:, :1], lab2[:, :1]).item() == 0


def test_gradients_of_colour_conversions_are_finite_at_and_beyond_the_ends():
    # black, white, out of range, and each sRGB curve's switch point
    rgb = torch.tensor([[0.0, 1.0, -0.1, 1.2], [0.0, 1.0, 0.04045, 0.5], [0.0, 1.0, 0.0031308, 0.2]])
    assert _finite_gradients(rgb_to_lab, rgb.double().reshape(3, 1, 4))
    # black, white, grey, and a colour out of gamut
    lab = torch.tensor([[0.0, 100.0, 50.0, 50.0], [0.0, 0.0, 0.0, 127.0], [0.0, 0.0, 0.0, -128.0]])
    assert _finite_gradients(lab_to_rgb, lab.double().reshape(3, 1, 4))


def test_ciede2000_gradient_is_correct_where_it_is_smooth():
    # away from greys and the 180-degree tie, autograd must agree with finite differences
    lab1, lab2 = (rgb_to_lab(torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(s)).double()) for s in (3, 4))
    assert torch.autograd.gradcheck(ciede2000, (lab1.requires_grad_(), lab2.requires_grad_()))
    rgb = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(5)).double()
    assert torch.autograd.gradcheck(rgb_to_lab, (rgb.requires_grad_(),))


# --- bad input ------------------------------------------------------------------------------------

LAB = torch.zeros(3, 2, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rgb_to_lab(np.zeros((3, 2, 2))), "must be a torch.Tensor"),
        (lambda: rgb_to_lab(torch.zeros(3, 2, 2, dtype=torch.uint8)), "floating-point tensor, got dtype torch.uint8"),
        (lambda: rgb_to_lab(torch.zeros(2, 2, 3)), r"3 channels at dim -3, got shape \(2, 2, 3\)"),
        (lambda: lab_to_rgb(torch.zeros(4, 2, 2)), r"lab must be shaped .* got shape \(4, 2, 2\)"),
        (lambda: lab_to_rgb(torch.zeros(3, 2)), r"got shape \(3, 2\)"),
        (lambda: ciede2000(LAB, torch.zeros(3, 2, 3)), r"same shape, got \(3, 2, 2\) and \(3, 2, 3\)"),
        (lambda: ciede2000(LAB, LAB.long()), "lab2 must be a floating-point tensor"),
        (lambda: ciede2000([50, 0, 0], LAB), "lab1 must be a torch.Tensor"),
        (lambda: ciede2000(LAB, LAB, kL=0), "kL must be a finite number > 0"),
        (lambda: ciede2000(LAB, LAB, kH="1"), "kH must be a finite number > 0"),
        (lambda: delta_e76(LAB, torch.zeros(1, 3, 2, 2)), "same shape"),
        (lambda: ciede2000(LAB, torch.zeros(3, 2, 2, device="meta")), "same device, got cpu and meta"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the compiled path ----------------------------------------------------------------------------


def test_compiled_path_gives_the_eager_numbers(monkeypatch):
    # Only ciede2000 is compiled here, once (each kernel costs seconds of C++ compilation);
    # benchmarks/bench_ciede.py checks rgb_to_lab's compiled path against its eager one.
    sharma1, sharma2, expected = sharma_pairs(torch.float32)
    random1, random2 = (rgb_to_lab(torch.rand(3, 30, 1, generator=torch.Generator().manual_seed(s))) for s in (0, 1))
    # the 34 pairs and 30 random ones as a batch of 2 images of 32 x 1 pixels
    pairs = ((sharma1, random1), (sharma2, random2))
    lab1, lab2 = (torch.cat(pair, dim=1).reshape(3, 2, 32, 1).transpose(0, 1) for pair in pairs)
    monkeypatch.setattr(ciede, "COMPILE", True)
    monkeypatch.setattr(ciede, "COMPILE_MIN_PIXELS", 1)
    monkeypatch.setattr(ciede, "compiled_bodies", {})
    monkeypatch.setattr(ciede, "compile_failed", False)
    with torch.no_grad():
        compiled = ciede2000(lab1, lab2)
    if ciede.compile_failed:
        pytest.skip("torch.compile does not work here; the eager fallback is tested below")
    assert set(ciede.compiled_bodies) == {ciede.ciede2000_planes}
    # the fused kernel keeps the 180-degree tie of pair 14 right too (fused multiply-adds and all)
    assert (compiled.reshape(64)[:34].double() - expected).abs().max() < 1e-4
    monkeypatch.setattr(ciede, "COMPILE", False)
    # float32 rounding differs between the fused kernel and eager ops (fused multiply-adds, vector math)
    torch.testing.assert_close(compiled, ciede2000(lab1, lab2), atol=1e-4, rtol=0)
    # with gradients wanted, the eager path runs even when compilation is on
    monkeypatch.setattr(ciede, "COMPILE", True)
    assert ciede2000(lab1.requires_grad_(), lab2).grad_fn is not None


def test_compile_failure_warns_once_and_falls_back_to_eager(monkeypatch):
    def broken_compile(function, **options):
        def fails(*arguments):
            raise RuntimeError("no C compiler")

        return fails

    monkeypatch.setattr(ciede, "COMPILE", True)
    monkeypatch.setattr(ciede, "COMPILE_MIN_PIXELS", 1)
    monkeypatch.setattr(ciede, "compiled_bodies", {})
    monkeypatch.setattr(ciede, "compile_failed", False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    rgb = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="torch.compile failed.*no C compiler"):
        lab = rgb_to_lab(rgb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        difference = ciede2000(lab, lab.flip(-1))
    monkeypatch.setattr(ciede, "COMPILE", False)
    torch.testing.assert_close(lab, rgb_to_lab(rgb), atol=0, rtol=0)
    torch.testing.assert_close(difference, ciede2000(lab, lab.flip(-1)), atol=0, rtol=0)
