"""What a saved run needs, whichever experiment it holds: where it ran, a folder it can write, and
on resume the configuration it was started with.

``run_ablation``, ``relatives.compare`` and ``beyond.run_rows`` save as they go; these three checks
keep a long run from failing late (an output folder that cannot be written) or mixing two runs (a
resumed run with other settings).
"""

import datetime
import json
import platform
from pathlib import Path

import torch

from lea_tiny import get_device
from lea_tiny.train import write_atomically


def run_environment(device):
    """What a run needs to be repeated: torch, the device, the CPU threads (see seed_everything), the date."""
    device = get_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return dict(torch=torch.__version__, device=str(device), device_name=name, threads=torch.get_num_threads(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def check_same_configuration(out_dir, saved, config):
    """Refuse to resume the run in ``out_dir``, saved with configuration ``saved``, unless ``config`` matches it."""
    config = json.loads(json.dumps(config))  # as it reads back from results.json: tuples become lists
    differences = [f"{name}={saved.get(name)!r} there, {value!r} here"
                   for name, value in config.items() if saved.get(name) != value]
    if differences:
        raise ValueError(f"cannot resume the run in {out_dir}: its configuration differs ({'; '.join(differences)}); "
                         f"use another out_dir, or run without resume to start it again")


def check_out_dir(out_dir, resume):
    """Fail now, not after hours of training, if the results cannot be written."""
    if out_dir is None:
        if resume:
            raise ValueError("resume=True needs the out_dir of the run to resume")
        return
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for left_by_a_killed_run in [*out_dir.glob(".*.tmp"), *out_dir.glob("fold_maps/.*.tmp")]:
        left_by_a_killed_run.unlink()
    write_atomically(out_dir / ".writable", lambda file: None)
    (out_dir / ".writable").unlink()
