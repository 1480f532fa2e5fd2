"""How many colour anomaly maps per second: RGB -> L*a*b* -> U-Net -> CIEDE2000 (lea_tiny.colorize).

An untrained U-Net costs as much as a trained one, so no training is needed. Prints, for each image
size and device, the whole pipeline (``anomaly_map``) and the share of each stage.

    .venv/bin/python benchmarks/bench_maps.py                 # 64 and 256 px, CPU and CUDA if present
    .venv/bin/python benchmarks/bench_maps.py --sizes 64 --images 128 --devices cpu
"""

import argparse

import torch

from lea_tiny import autocast, get_device, seed_everything
from lea_tiny.ciede import ciede2000, rgb_to_lab
from lea_tiny.colorize import UNet, anomaly_map

import timing


def bench(image_size, count, batch_size, device, repeats):
    unet = UNet(image_size).eval().to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    rgb = torch.rand(count, 3, image_size, image_size, device=device)
    whole = timing.best_seconds(lambda: anomaly_map(unet, rgb, batch_size=batch_size), device, repeats)

    def predict(lightness):  # as inside anomaly_map: only the U-Net runs in bf16 on CUDA
        with autocast(device):
            return unet(lightness)

    batch = rgb[:batch_size]
    with torch.inference_mode():
        lab = rgb_to_lab(batch)
        stages = {
            "L*a*b*": timing.best_seconds(lambda: rgb_to_lab(batch), device, repeats),
            "U-Net": timing.best_seconds(lambda: predict(lab[:, :1] / 100), device, repeats),
            "CIEDE2000": timing.best_seconds(lambda: ciede2000(lab, lab.flip(0)), device, repeats),
        }
    total = sum(stages.values())
    shares = ", ".join(f"{name} {100 * seconds / total:.0f}%" for name, seconds in stages.items())
    print(f"{device.type:>4} {image_size:>4} px: {count / whole:8.1f} maps/s "
          f"({count} images, batch {batch_size}; per batch: {shares})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--images", type=int, default=64, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = parser.parse_args()
    seed_everything(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in args.devices:
        device = get_device(name)
        if device.type == "cuda":
            print(f"CUDA: {torch.cuda.get_device_name(device)} (bf16 autocast, channels_last)")
        for image_size in args.sizes:
            bench(image_size, args.images, args.batch_size, device, args.repeats)


if __name__ == "__main__":
    main()
