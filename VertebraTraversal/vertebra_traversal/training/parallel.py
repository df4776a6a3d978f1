"""One function over many cases, here or in worker processes of one torch thread each."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, TypeVar

import torch

from ..checkpoint import LoadedModel, load_model
from .data import TrainingCase

Result = TypeVar("Result")
Progress = Callable[[int, int, str], None]


@lru_cache(maxsize=2)
def loaded_model(path: Path) -> LoadedModel:
    """The model file on the CPU, loaded once per process (the last two files): what a function given to
    :func:`map_cases` with a model path calls."""
    return load_model(path, device="cpu")


def map_cases(function: Callable[..., Result], cases: Sequence[TrainingCase], *args: Any, workers: int = 0,
              progress: Optional[Progress] = None) -> List[Result]:
    """``function(case, *args)`` for every case, results in the order of ``cases``; in ``workers`` processes
    of one torch thread each, started by a fork server (0, or a single case: in this process, with its
    threads). ``progress(done, total, case_id)`` after each case, in order. ``function`` and ``args`` must
    pickle when ``workers`` > 0."""
    results: List[Result] = []

    def report(result: Result) -> None:
        results.append(result)
        if progress is not None:
            progress(len(results), len(cases), cases[len(results) - 1].case_id)

    if workers <= 0 or len(cases) < 2:
        for case in cases:
            report(function(case, *args))
        return results
    # a fork server: the workers do not inherit this process's torch and OpenMP thread pools, which a
    # training loop may have started before the call
    with ProcessPoolExecutor(max_workers=min(workers, len(cases)), mp_context=get_context("forkserver"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for result in pool.map(function, cases, *([arg] * len(cases) for arg in args)):
            report(result)
    return results
