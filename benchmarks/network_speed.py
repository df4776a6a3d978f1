"""Seconds per training step and per inference patch of network configurations on this machine.

    python benchmarks/network_speed.py [--threads 2] [--steps 5]

Used to choose the ``compact`` preset (best accuracy per CPU second): PyTorch's CPU conv3d backward
dominates, so the patch volume and the filter count decide the step time. Each configuration is measured
with the default (contiguous) and the channels-last memory format; the trainer and the predictor use
channels-last on the CPU because oneDNN's conv3d is faster with it.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from vertebra_traversal.network import IterativeFCN, NetworkConfig, compact_config

CANDIDATES = {
    "compact (16 f, 48^3)": compact_config(),
    "16 f, 64^3": NetworkConfig(filters=16, depth=3, head_features=32, head_depth=1, patch_size=(64, 64, 64)),
    "24 f, 48^3": NetworkConfig(filters=24, depth=3, head_features=32, head_depth=1, patch_size=(48, 48, 48)),
    "32 f, 64^3": NetworkConfig(filters=32, depth=3, head_features=48, head_depth=2, patch_size=(64, 64, 64)),
}


def measure(config: NetworkConfig, steps: int, channels_last: bool) -> dict:
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = IterativeFCN(config).to(memory_format=layout)
    optimiser = torch.optim.Adam(model.parameters())
    x = torch.randn(1, 2, *config.patch_size).contiguous(memory_format=layout)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        seg, label, complete = model.forward_logits(x)
        (seg.mean() + label.mean() + complete.mean()).backward()
        optimiser.step()
        optimiser.zero_grad()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.inference_mode():
        batch = torch.randn(4, 2, *config.patch_size).contiguous(memory_format=layout)
        model(batch)
        start = time.perf_counter()
        model(batch)
        infer = (time.perf_counter() - start) / 4
    return {"train_step_s": round(sorted(times[1:])[len(times[1:]) // 2], 3), "inference_patch_s": round(infer, 3),
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, config in CANDIDATES.items():
        for channels_last in (False, True):
            print(json.dumps({"network": name, "threads": args.threads, "channels_last": channels_last,
                              **measure(config, args.steps, channels_last)}), flush=True)


if __name__ == "__main__":
    main()
