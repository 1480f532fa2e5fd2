"""The package itself: its two helpers, and that pyproject.toml and environment.yml agree."""

import re
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pytest
import torch

import lea_tiny

ROOT = Path(__file__).resolve().parents[1]
# conda-forge spells one package differently from PyPI.
CONDA_NAME = {"torch": "pytorch"}


def _name(requirement):
    return re.split(r"[<>=!~;:\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_names_every_runtime_dependency_and_vice_versa():
    runtime = {_name(r) for r in requires("lea_tiny") if "extra ==" not in r}
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:")[1]
    conda = {_name(line[4:]) for line in dependencies.splitlines() if re.match(r"^  - [A-Za-z]", line)}
    conda -= {"python", "pip"}
    # the extras (test, and dev, which is test plus JupyterLab), without dev's reference to lea_tiny[test]
    optional = {_name(r) for r in requires("lea_tiny") if "extra ==" in r} - {"lea_tiny"}
    assert {CONDA_NAME.get(n, n) for n in runtime} <= conda
    assert conda <= {CONDA_NAME.get(n, n) for n in runtime | optional}


def test_get_device_defaults_to_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert lea_tiny.get_device().type == expected
    assert lea_tiny.get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_get_device_refuses_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="CUDA is not available"):
        lea_tiny.get_device("cuda")


def test_seed_everything_repeats_every_generator():
    def draw():
        return torch.rand(3).tolist(), np.random.rand(3).tolist()

    lea_tiny.seed_everything(7)
    first = draw()
    lea_tiny.seed_everything(7)
    assert draw() == first
    lea_tiny.seed_everything(8)
    assert draw() != first


def test_seed_everything_rejects_a_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        lea_tiny.seed_everything(-1)
