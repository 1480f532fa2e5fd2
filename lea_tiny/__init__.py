"""lea_tiny: a small, readable LEA-Net (Katafuchi & Tokunaga, arXiv 2109.05493).

Each concept lives in one module: ``ciede`` (colour science), ``data``, ``colorize``
(the U-Net and the colour anomaly map), ``maps`` (maps without leakage, their scale, the image
score), ``attention``, ``caan``, ``adn``, ``train`` (one model),
``ablation`` (repeated cross-validation, Table 3) and ``compare`` (paired differences with intervals);
from the follow-ups by the same group, ``autoencoder`` (maps from reconstruction) and ``two_stage``
(the CAAN trained first).
This file holds the helpers every module shares: pick a device, seed everything and the
mixed precision used on CUDA. The checks every entry point runs on its arguments are in ``checks``.
"""

import os
import random

import numpy as np
import torch

# check_int stays importable as lea_tiny.check_int, where it lived before lea_tiny.checks.
from lea_tiny.checks import check_device, check_int, check_seed  # noqa: F401

__version__ = "0.1.0"


def get_device(device=None):
    """The device to compute on: the one asked for, else CUDA when present, else the CPU.

    Pick it once and pass it around; every function in lea_tiny takes ``device=``. Only the CPU
    and the CUDA devices present are accepted ("cpu", "cuda", "cuda:1", ...); see ``checks.check_device``.
    """
    if device is not None:
        return check_device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed=0):
    """Seed Python, NumPy and torch (CPU and CUDA) so the same seed gives the same numbers on CPU.

    ``seed`` is an int in 0..2**32 - 1, the range NumPy accepts. On the CPU the numbers repeat for
    the same number of threads (``torch.get_num_threads()``): a convolution adds its terms in an
    order that depends on it, and a training run turns last-bit differences into another model.
    GPU kernels can be non-deterministic; results there agree to within noise.
    """
    seed = check_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    return seed


def to_device(module, device):
    """``module`` moved to ``device``, channels_last on CUDA (where convolutions prefer it): the one memory policy."""
    module.to(device)
    return module.to(memory_format=torch.channels_last) if device.type == "cuda" else module


def autocast(device):
    """bf16 autocast on CUDA, a no-op elsewhere: the one mixed-precision policy of every forward pass."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# The one factory a learner needs first; it imports the networks, so it comes after the helpers above.
from lea_tiny.attention import ATTENTION_VARIANTS, VARIANTS, make_model  # noqa: E402
