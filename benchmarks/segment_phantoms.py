"""Benchmark the whole segmentation on phantoms: network passes per vertebra, seconds per scan, peak memory.

    python benchmarks/segment_phantoms.py [--model ct|mr|PATH] [--count 5] [--seed 900000] [--threads 2]
    python benchmarks/segment_phantoms.py --model mr --scans mr-test/rawdata/*/*.nii.gz [--executor legacy]

The paper needs about 4 passes per vertebra (55 passes for 13.7 vertebrae) and ~1 min per scan on a GPU.
Peak memory is the process's maximum resident set size (Linux ru_maxrss); run once per setting, each in a
fresh process. ``--scans`` segments these files instead of generating spine phantoms. ``--executor legacy``
runs the TorchScript model with PyTorch's legacy graph executor: the default (profiling) one compiles and
keeps a specialised graph for each new way a network is called (another batch size, another wrapper such
as a rescue network's second traversal, ``vertebra_traversal/start_network.py``), which is faster but
holds more memory; the MR model card gives the numbers.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.imageio import read_image
from vertebra_traversal.models import resolve_model
from vertebra_traversal.phantom import PhantomConfig, generate_case
from vertebra_traversal.pipeline import SegmentConfig, segment_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ct")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=900000, help="phantom seeds seed..seed+count-1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--scans", nargs="+", help="segment these volumes instead of generated phantoms")
    parser.add_argument("--executor", choices=("profiling", "legacy"), default="profiling",
                        help="TorchScript graph executor (default: PyTorch's, profiling)")
    args = parser.parse_args()
    if args.executor == "legacy":
        torch._C._jit_set_profiling_executor(False)  # no public switch; the legacy executor does not specialise
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model(args.model), device=args.device)
    modality = model.metadata.modality.lower()
    rows = []
    for key, name, image, truth in _inputs(args, modality):
        start = time.perf_counter()
        result = segment_image(image, model, SegmentConfig(batch_size=args.batch_size))
        seconds = time.perf_counter() - start
        found = max(1, len(result.vertebrae))
        rows.append({key: name, "voxels": int(np.prod(image.GetSize())), "vertebrae": len(result.vertebrae),
                     "truth": truth, "labels": [v.label for v in result.vertebrae], "passes": result.network_passes,
                     "passes_per_vertebra": round(result.network_passes / found, 2), "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"device": str(model.device), "threads": args.threads, "executor": args.executor, "scans": len(rows),
               "total_seconds": round(float(sum(r["seconds"] for r in rows)), 1),
               "mean_seconds_per_scan": round(float(np.mean([r["seconds"] for r in rows])), 1),
               "mean_passes_per_vertebra": round(float(np.mean([r["passes_per_vertebra"] for r in rows])), 2),
               "mean_vertebrae": round(float(np.mean([r["vertebrae"] for r in rows])), 1),
               "peak_rss_mib": round(peak_mib)}
    print(json.dumps(summary))


def _inputs(args: argparse.Namespace, modality: str):
    """(``"scan"``, path, image, None) for each given file, else (``"seed"``, seed, image, reference vertebra
    count) for generated spine phantoms of seeds seed..seed+count-1."""
    if args.scans:
        for path in args.scans:
            yield "scan", path, read_image(path), None
        return
    for seed in range(args.seed, args.seed + args.count):
        case = generate_case(seed, PhantomConfig(modality=modality, fov="spine"))
        yield "seed", seed, case.image, len(case.info.vertebrae)


if __name__ == "__main__":
    main()
