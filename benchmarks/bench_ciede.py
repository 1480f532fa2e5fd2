"""How fast lea_tiny.ciede is next to scikit-image: rgb_to_lab vs rgb2lab, ciede2000 vs deltaE_ciede2000.

Same machine, same run, same images (16 random 256 x 256 images by default). scikit-image is timed
in float64 and float32 and its faster dtype is the reference; lea_tiny runs in float32, eagerly and
through torch.compile (the fast path it takes by itself for large no-grad inputs). Each timing is the
best of ``--repeats`` calls after a warm-up call; the first compiled call (compilation included) is
reported on its own. The comparison is run ``--rounds`` times, interleaved, so a busy CPU slows both
sides alike; the best of each is kept. scikit-image runs on one thread, so the compiled path is also
timed on one thread: on a machine shared with other work that is the fairer ratio. On CUDA, prints
throughput in Mpix/s.

    .venv/bin/python benchmarks/bench_ciede.py
    .venv/bin/python benchmarks/bench_ciede.py --images 4 --rounds 1 --devices cpu
"""

import argparse

import numpy as np
import torch
from skimage import color

from lea_tiny import ciede, get_device, seed_everything

import timing


def _torch_steps(rgb1, rgb2, compiled):
    """rgb_to_lab and ciede2000 as one calls them without gradients: under inference_mode."""
    ciede.COMPILE = False  # the inputs are made eagerly, so that a step's first call is the one that compiles
    with torch.inference_mode():
        lab1, lab2 = ciede.rgb_to_lab(rgb1), ciede.rgb_to_lab(rgb2)

    def step_for(function, *arguments):
        def step():
            ciede.COMPILE = compiled
            with torch.inference_mode():
                return function(*arguments)

        return step

    return {"rgb_to_lab": step_for(ciede.rgb_to_lab, rgb1), "ciede2000": step_for(ciede.ciede2000, lab1, lab2)}


def _on_one_thread(step):
    """``step`` on one CPU thread, as scikit-image runs: a fair comparison also on a busy machine."""

    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return step()
        finally:
            torch.set_num_threads(threads)

    return run


def bench_cpu(count, size, repeats, rounds):
    device = torch.device("cpu")
    rng = np.random.default_rng(0)
    numpy_rgb = [rng.random((count, size, size, 3)) for _ in range(2)]
    numpy_lab = [color.rgb2lab(rgb) for rgb in numpy_rgb]
    torch_rgb = [torch.from_numpy(rgb).permute(0, 3, 1, 2).float().contiguous() for rgb in numpy_rgb]
    skimage_steps = {}
    for dtype in (np.float64, np.float32):
        rgb, lab1, lab2 = numpy_rgb[0].astype(dtype), numpy_lab[0].astype(dtype), numpy_lab[1].astype(dtype)
        skimage_steps[("rgb_to_lab", dtype.__name__)] = lambda rgb=rgb: color.rgb2lab(rgb)
        skimage_steps[("ciede2000", dtype.__name__)] = lambda lab1=lab1, lab2=lab2: color.deltaE_ciede2000(lab1, lab2)
    eager = _torch_steps(*torch_rgb, compiled=False)
    fast = _torch_steps(*torch_rgb, compiled=True)
    paths = {"eager": eager, "compiled": fast, "compiled, 1 thread": {k: _on_one_thread(v) for k, v in fast.items()}}

    megapixels = count * size * size / 1e6
    print(f"CPU, {torch.get_num_threads()} threads: {count} images of {size} x {size} ({megapixels:.2f} Mpix)")
    for name, step in fast.items():
        print(f"  first compiled call of {name} (compilation included): {timing.seconds(step, device):.1f} s")
    if ciede.compile_failed:
        print("  torch.compile failed here: the 'compiled' rows below are eager")

    best = {}
    for _ in range(rounds):
        timings = {("skimage", *key): timing.best_seconds(step, device, repeats) for key, step in skimage_steps.items()}
        for path, steps in paths.items():
            timings.update({(path, name, "float32"): timing.best_seconds(step, device, repeats) for name, step in steps.items()})
        best = {key: min(seconds, best.get(key, float("inf"))) for key, seconds in timings.items()}

    for name, goal in (("rgb_to_lab", 5), ("ciede2000", 10)):
        reference = min((best[("skimage", name, d)], d) for d in ("float64", "float32"))
        print(f"  {name}:")
        for dtype in ("float64", "float32"):
            print(f"    skimage  {dtype:>26}: {1000 * best[('skimage', name, dtype)]:8.1f} ms")
        for path in paths:
            seconds = best[(path, name, "float32")]
            print(f"    lea_tiny {path:>18} float32: {1000 * seconds:8.1f} ms = {reference[0] / seconds:5.1f}x "
                  f"faster than skimage {reference[1]} (goal for the compiled path: {goal}x)")

    # the two paths must agree, and agree with skimage
    agreement = {}
    for name in ("rgb_to_lab", "ciede2000"):
        agreement[name] = (fast[name]() - eager[name]()).abs().max().item()
    with torch.inference_mode():
        ours = fast["ciede2000"]().double().numpy()
    print(f"  compiled vs eager, max |difference|: rgb_to_lab {agreement['rgb_to_lab']:.1e}, "
          f"ciede2000 {agreement['ciede2000']:.1e}; ciede2000 vs skimage float64: "
          f"{np.abs(ours - color.deltaE_ciede2000(*numpy_lab)).max():.1e}")


def bench_cuda(count, size, repeats, device):
    rgb1, rgb2 = (torch.rand(count, 3, size, size, device=device) for _ in range(2))
    megapixels = count * size * size / 1e6
    print(f"CUDA {torch.cuda.get_device_name(device)}: {count} images of {size} x {size}")
    for path, compiled in (("eager", False), ("compiled", True)):
        steps = _torch_steps(rgb1, rgb2, compiled)
        for name, step in steps.items():
            first = timing.seconds(step, device)
            seconds = timing.best_seconds(step, device, repeats)
            print(f"  {name:>10} {path:>8}: {megapixels / seconds:8.0f} Mpix/s "
                  f"({1000 * seconds:.2f} ms; first call {first:.1f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (best is kept)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the whole comparison")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = parser.parse_args()
    seed_everything(0)
    ciede.COMPILE_MIN_PIXELS = 1  # time the compiled path at any size (by default it starts at 1 Mpix)
    print(f"torch {torch.__version__}")
    for name in args.devices:
        device = get_device(name)
        if device.type == "cuda":
            bench_cuda(args.images, args.size, args.repeats, device)
        else:
            bench_cpu(args.images, args.size, args.repeats, args.rounds)


if __name__ == "__main__":
    main()
