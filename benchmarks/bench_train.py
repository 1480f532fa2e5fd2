"""What LEA-Net costs to train, next to its baseline: training images per second (lea_tiny.train).

One training step is what ``fit`` does per batch: forward pass of ADN (and CAAN), the joint loss of
Eq. 1, backward pass, Adam step. Timed for the baseline ResNet18 and for LEA-Net with the
MobileNet-small and the ResNet-based CAAN, at 64 and 256 px, on random data (the cost of a step
does not depend on what the images show). The ratio is each model's time per step over the
baseline's; the goal for the MobileNet CAAN is at most 1.3. On CUDA the 256 px rows are repeated
in bf16 autocast with channels_last, as ``fit`` trains there.

    .venv/bin/python benchmarks/bench_train.py                   # 64 and 256 px, the default device
    .venv/bin/python benchmarks/bench_train.py --sizes 64 --steps 20 --device cpu

Timings on a shared CPU move from run to run. Each number is the fastest single step seen, over
``--repeats`` rounds that alternate between the models, so a busy moment hits them alike and the
least disturbed step counts.
"""

import argparse

import torch

from lea_tiny import get_device, seed_everything
from lea_tiny.attention import make_model
from lea_tiny.train import default_lr, joint_loss

import timing

MODELS = (("baseline", None), ("caan_mobilenet", 1), ("caan_resnet", 1))  # point 1: the largest features


def _step_function(variant, point, image_size, batch_size, device, bf16):
    """One training step of ``variant`` on a fixed random batch, as a function of no arguments."""
    model = make_model(variant, adn="resnet18", attention_point=point, image_size=image_size).to(device).train()
    images = torch.rand(batch_size, 3, image_size, image_size, device=device)
    maps = torch.rand(batch_size, 1, image_size, image_size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        maps = maps.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch_size, device=device) % 2
    optimizer = torch.optim.Adam(model.parameters(), lr=default_lr("resnet18"))

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            adn_logit, caan_logit = model(images, maps)
        loss, _, _ = joint_loss(adn_logit, caan_logit, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(parameter.numel() for parameter in model.parameters())


def bench(image_size, batch_size, steps, repeats, device, bf16):
    """Rows of (variant, params, images/s, ratio of time per step to the baseline's)."""
    seed_everything(0)
    functions = {variant: _step_function(variant, point, image_size, batch_size, device, bf16)
                 for variant, point in MODELS}
    for step, _ in functions.values():  # warm-up: allocator, cuDNN autotuning, lazy initialisation
        step()
    best = {variant: float("inf") for variant in functions}
    for _ in range(repeats):
        for variant, (step, _) in functions.items():
            # the shortest step: what a step costs when nothing else competes for the CPU
            best[variant] = min(best[variant], *(timing.seconds(step, device) for _ in range(steps)))
    return [(variant, functions[variant][1], batch_size / best[variant], best[variant] / best["baseline"])
            for variant in functions]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default: 5 at 64 px, 2 above)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"training step of ResNet18 ADN, batch {args.batch_size}, on {name}, torch {torch.__version__}")
    print(f"{'size':>5} {'precision':>9}  {'model':<16} {'params':>7} {'images/s':>9} {'time vs baseline':>17}")
    settings = [(size, False) for size in args.sizes]
    if device.type == "cuda":
        settings += [(size, True) for size in args.sizes if size == 256]
    for size, bf16 in settings:
        steps = args.steps or (5 if size <= 64 else 2)
        for variant, params, speed, ratio in bench(size, args.batch_size, steps, args.repeats, device, bf16):
            print(f"{size:>5} {'bf16' if bf16 else 'fp32':>9}  {variant:<16} {params / 1e6:>6.1f}M {speed:>9.1f} "
                  f"{ratio:>16.2f}x")


if __name__ == "__main__":
    main()
