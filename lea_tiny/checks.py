"""Checking what comes in: the one module where lea_tiny's public functions test their arguments.

Each check names the argument, says what was wrong (with the value, shape or dtype it got) and what
is expected, and raises ValueError. A function calls it in one line where the value is first used,
so the other modules read like the paper. The checks are cheap (at most one pass over a tensor) and
run once per call, never inside a training loop.

Read top to bottom:
    numbers and flags   is_int, check_int, check_seed, check_bool, check_number, check_lr
    tensors             check_dtype, check_float32, check_finite, check_unit_range, check_images, check_maps
    labels and indices  check_labels, check_both_classes, check_indices
    models and devices  check_model, check_model_inputs, check_device
    counts              fewest_to_split
"""

import math
import numbers
import operator

import numpy as np
import torch
from torch import nn

SEED_MAX = 2**32 - 1  # numpy's legacy generator (np.random.seed, which seed_everything calls) takes no larger seed
EIGHT_BIT_FIX = "images in 0..255 must be divided by 255"


# Numbers and flags --------------------------------------------------------------------------------------
def is_int(value):
    """True for an int (Python's or NumPy's), False for anything else: a bool, or a whole float like 2.0."""
    # bool is a subclass of int, but epochs=True or attention_point=True is a mistake, not a 1.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(value, name, minimum, maximum=None):
    """``value`` as an int if it is a whole number >= ``minimum`` (and <= ``maximum``), else a ValueError.

    Booleans are refused although Python counts them as ints, and so are floats, even whole ones:
    ``attention_point=2.0`` is an int only by accident.
    """
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return int(value)


def check_seed(seed, name="seed", more=0):
    """``seed`` as an int if it lies in 0..2**32 - 1 (numpy's range), else a ValueError.

    ``more``: the function also uses the seeds ``seed + 1 .. seed + more``, which must fit as well.
    """
    limit = SEED_MAX - more
    if not is_int(seed) or not 0 <= seed <= limit:
        uses = f"; seeds {name} .. {name} + {more} are used" if more else ""
        raise ValueError(f"{name} must be an int >= 0 and <= {limit} (numpy's seeds end at 2**32 - 1{uses}), "
                         f"got {seed!r}")
    return int(seed)


def check_bool(value, name):
    """``value`` if it is True or False, else a ValueError: 0, 1 or "yes" are not flags."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


_BOUNDS = ((">", operator.gt), (">=", operator.ge), ("<", operator.lt), ("<=", operator.le))


def check_number(value, name, *, above=None, at_least=None, below=None, at_most=None):
    """``value`` as a float if it is a finite real number within the bounds given, else a ValueError.

    Booleans are refused (``lr=True`` is a mistake), and so are NaN and inf, which pass a plain
    ``lr > 0``: ``lr=float("inf")`` trains to NaN weights.
    """
    bounds = [(sign, test, bound) for (sign, test), bound in zip(_BOUNDS, (above, at_least, below, at_most))
              if bound is not None]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not all(test(value, bound) for _, test, bound in bounds):
        expected = " and ".join(f"{sign} {bound}" for sign, _, bound in bounds)
        raise ValueError(f"{name} must be a finite number {expected}".rstrip() + f", got {value!r}")
    return float(value)


def check_lr(lr):
    """``lr`` if it is None (the paper's rate for the ADN, ``train.default_lr``) or a finite number > 0."""
    return None if lr is None else check_number(lr, "lr (None for the paper's)", above=0)


# Tensors ------------------------------------------------------------------------------------------------
def check_dtype(tensor, name, dtype, fix):
    """``tensor`` if it is a torch.Tensor of ``dtype``, else a ValueError that names the dtype and ends with ``fix``."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype:
        got = f"dtype {tensor.dtype}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        kind = str(dtype).removeprefix("torch.")
        article = "an" if kind.startswith("int") else "a"  # an int64, a uint8, a float32
        raise ValueError(f"{name} must be {article} {kind} tensor, got {got}; {fix}")
    return tensor


def check_float32(tensor, name):
    """``tensor`` if it is a float32 torch.Tensor, else a ValueError that says how to convert it.

    float32 because every network of lea_tiny computes in it: uint8 or float64 inputs would fail
    deep inside torch with a message about "Input type" and "bias type".
    """
    if not isinstance(tensor, torch.Tensor):
        fix = "convert an array with torch.as_tensor(array).float()"
    else:
        fix = "convert it with .float()" if tensor.is_floating_point() else "convert 8-bit images with .float() / 255"
    return check_dtype(tensor, name, torch.float32, fix)


def check_finite(tensor, name, expected="finite"):
    """``tensor`` if it holds no NaN or inf, else a ValueError that counts them.

    A tensor on the meta device (shapes without values, tutorial 06) has nothing to check.
    """
    bad = 0 if tensor.is_meta else int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ValueError(f"{name} must be {expected}, got {bad} NaN or inf value(s) among {tensor.numel()}; find "
                         f"where they come from, or drop those images (a NaN spreads through every convolution)")
    return tensor


def check_unit_range(tensor, name, fix=EIGHT_BIT_FIX):
    """``tensor`` if every value is finite and in [0, 1], else a ValueError that ends with ``fix``."""
    check_finite(tensor, name, "finite, with values in [0, 1]")
    if tensor.numel() and not tensor.is_meta:
        low, high = (value.item() for value in torch.aminmax(tensor))
        if low < 0 or high > 1:
            raise ValueError(f"{name} must have values in [0, 1], got min {low:.4g}, max {high:.4g}; {fix}")
    return tensor


def check_images(images, name="images", channels=3, fix=EIGHT_BIT_FIX, allow_empty=False):
    """``images`` if it is a float32 tensor (N, channels, H, W), N >= 1, finite and in [0, 1]; else a ValueError.

    This is what lea_tiny means by images everywhere, and (with ``channels=1``) by scaled anomaly maps.
    ``allow_empty``: N = 0 is fine (an empty subset of a data set).
    """
    check_float32(images, name)
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"{name} must be a float32 tensor of shape (N, {channels}, H, W), got shape "
                         f"{tuple(images.shape)}")
    if images.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (N = 0)")
    return check_unit_range(images, name, fix)


def check_maps(maps, name="maps"):
    """``maps`` if it is a tensor (N, H, W), N >= 1, finite and >= 0 (raw CIEDE2000 maps), else a ValueError."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, H, W), got {got}")
    if maps.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    if not bool(torch.isfinite(maps).all()) or maps.min().item() < 0:
        raise ValueError(f"{name} must be finite and >= 0 (CIEDE2000 differences)")
    return maps


# Labels -------------------------------------------------------------------------------------------------
def check_labels(labels, count, name="labels"):
    """``labels`` as an int64 tensor if they are ``count`` integers, each 0 (normal) or 1 (anomalous)."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integers 0 (normal) or 1 (anomalous), got dtype {labels.dtype}")
    if labels.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},), one per image, got {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{name} must be 0 (normal) or 1 (anomalous), got values {labels.unique().tolist()}")
    return labels.long()


def check_both_classes(labels, what):
    """A ValueError unless ``labels`` hold both classes; ``what`` says whose labels they are."""
    present = set(labels.unique().tolist())
    if present != {0, 1}:
        only = "normal" if present == {0} else "anomalous"
        raise ValueError(f"{what} holds only {only} images; it needs both normal (0) and anomalous (1) ones")
    return labels


def check_indices(index, count, name):
    """``index`` as an int64 tensor if it is a 1-D list of distinct indices into ``count`` items, else a ValueError."""
    index = torch.as_tensor(index)
    if index.ndim != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D array of integer indices, got shape {tuple(index.shape)} "
                         f"and dtype {index.dtype}")
    if index.numel() and not bool(((index >= 0) & (index < count)).all()):
        raise ValueError(f"{name} holds indices outside 0..{count - 1}")
    if index.unique().numel() != index.numel():
        raise ValueError(f"{name} holds repeated indices")
    return index.long()


# Models and devices -------------------------------------------------------------------------------------
def check_model(model, name="model"):
    """``model`` if it is a LEA-Net model (``lea_tiny.attention.make_model``), else a ValueError."""
    if not isinstance(model, nn.Module) or not all(hasattr(model, key) for key in ("variant", "adn_name")):
        raise ValueError(f"{name} must be a LEA-Net model from lea_tiny.attention.make_model, "
                         f"got {type(model).__name__}")
    return model


def check_trained_network(network, name, kind):
    """``network`` if it is a torch.nn.Module in eval mode (a trained ``kind``), else a ValueError."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module (a trained {kind}), got {type(network).__name__}")
    if network.training:
        raise ValueError(f"{name} is in training mode (BatchNorm would use batch statistics); call {name}.eval() first")
    return network


def check_model_inputs(model, images, anomaly_maps, labels):
    """What every function that feeds a model its data checks once; returns the labels as int64."""
    check_model(model)
    check_images(images)
    expected = (images.shape[0], 1, *images.shape[2:])
    if not isinstance(anomaly_maps, torch.Tensor) or tuple(anomaly_maps.shape) != expected:
        shape = tuple(anomaly_maps.shape) if isinstance(anomaly_maps, torch.Tensor) else type(anomaly_maps).__name__
        raise ValueError(f"anomaly_maps must have shape {expected} to match images, got {shape}")
    check_images(anomaly_maps, "anomaly_maps", channels=1, fix="scale them with lea_tiny.maps.scale_maps")
    return check_labels(labels, images.shape[0])


def check_device(device):
    """``device`` as a torch.device if it is the CPU or a CUDA device present here, else a ValueError.

    torch knows more device types (mps, meta, xla, ...); lea_tiny is written and tested for these two,
    and another would fail late, deep inside a training run.
    """
    expected = "'cpu' or a CUDA device ('cuda', 'cuda:0', ...)"
    try:
        parsed = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:  # torch.device("toaster")
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        shown = str(device) if isinstance(device, torch.device) else device
        raise ValueError(f"device must be {expected}, got {shown!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(parsed)!r} was asked for but CUDA is not available here; use 'cpu'")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(parsed)!r} was asked for but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return parsed


# Counts -------------------------------------------------------------------------------------------------
def fewest_to_split(parts, kept):
    """The fewest items that, cut into ``parts`` near-equal parts, leave ``kept`` or more outside every part.

    Outside the largest part, of ceil(n / parts) items, lie floor(n (parts - 1) / parts); that is at
    least ``kept`` from n = ceil(kept * parts / (parts - 1)) on. Every part must hold one item too.
    """
    return max(parts, -(-kept * parts // (parts - 1)))
