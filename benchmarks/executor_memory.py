"""Seconds and peak resident memory of segmenting scans in one process, with TorchScript's default
(profiling) graph executor or the legacy one.

    python benchmarks/executor_memory.py SCAN.nii.gz ... --model mr [--executor legacy] [--threads 2]

Run it once per executor, each in a fresh process (the peak is the process's). A model file is TorchScript;
by default PyTorch compiles a specialised graph for each new way a network is called (another batch size,
another wrapper around the same network), and keeps it. A model with a rescue network calls its networks
in a second wrapper where a scan stalls (``vertebra_traversal/start_network.py``), so such a scan adds
graphs. The MR model card gives the numbers; the peak varies by a few hundred MB from run to run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time

import torch

from vertebra_traversal.checkpoint import load_model
from vertebra_traversal.imageio import read_image
from vertebra_traversal.models import resolve_model
from vertebra_traversal.pipeline import segment_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scans", nargs="+", help="input volumes")
    parser.add_argument("--model", default="mr", help="'ct', 'mr' or a checkpoint path")
    parser.add_argument("--executor", choices=("profiling", "legacy"), default="profiling")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.executor == "legacy":
        torch._C._jit_set_profiling_executor(False)  # no public switch; the legacy executor does not specialise
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model(args.model), device="cpu")
    start, found = time.perf_counter(), []
    for scan in args.scans:
        result = segment_image(read_image(scan), model)
        found.append([(v.label, round(v.volume_mm3, 1)) for v in result.vertebrae])
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"executor": args.executor, "scans": len(args.scans), "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "vertebrae": sum(map(len, found)),
                      "results_digest": hashlib.sha1(repr(found).encode()).hexdigest()[:12]}))


if __name__ == "__main__":
    main()
