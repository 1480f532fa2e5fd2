"""Wall-clock timing shared by the benchmarks: on CUDA, wait for the GPU before reading the clock."""

import time

import torch


def seconds(step, device):
    """Seconds one call of ``step()`` takes, GPU work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def best_seconds(step, device, repeats):
    """Best of ``repeats`` timings of ``step()``, after one untimed warm-up call."""
    step()
    return min(seconds(step, device) for _ in range(repeats))
