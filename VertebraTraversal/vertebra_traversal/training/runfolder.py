"""The run folder: identity, resumable checkpoint, CSV log, validation history (all writes atomic).

Layout of ``RUN_DIR``::

    run.json            what the run is: configuration, training data, init model (its identity)
    checkpoint.pt       model, optimiser, RNG states, iteration, elapsed seconds, validation history
    log.csv             iteration, loss, seg, label, completeness, lambda, seconds
    validation.jsonl    one JSON object per validation pass
    cache/              model-grid arrays of the cases (see :mod:`.data`)
    model.pt            the final TorchScript model (written once, at the end)
    run.lock            held (an OS file lock) by the process training in the folder

A folder that holds anything else, or another run, is refused and left untouched; so is a folder whose
lock another live process holds (the lock goes with its process, so a run that was killed resumes).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional

import torch

from ..imageio import InputError, read_json_document, write_bytes_atomic

logger = logging.getLogger(__name__)

RUN_FORMAT = "vertebra-traversal-run"
LOG_FIELDS = ("iteration", "loss", "seg", "label", "completeness", "lambda", "seconds")
LOCK_NAME = "run.lock"


def _try_lock(handle: IO[str]) -> bool:
    """Take an exclusive, non-blocking OS lock on the open file; False when another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: List[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [prefix or "(root)"]


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run folder and the operations on them."""

    root: Path

    @property
    def identity_file(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def validation(self) -> Path:
        return self.root / "validation.jsonl"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder for this process while the block runs (after :meth:`claim`).

        Raises:
            InputError: another process holds it: two runs would write the same log and checkpoint.
        """
        with self.lock_file.open("a", encoding="utf-8") as handle:
            if not _try_lock(handle):
                raise InputError(f"{self.root}: another training process is using this run folder; wait for it "
                                 f"to finish or stop it, or choose another --out folder")
            yield

    def claim(self, identity: Dict[str, Any]) -> bool:
        """Make the folder this run's, or recognise it as this run's. Returns True when resuming.

        Raises:
            InputError: the folder holds other files, or another run (the message lists what differs).
        """
        identity = json.loads(json.dumps(identity))  # canonical JSON types (tuples -> lists)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: is a file, not a folder; choose a new or empty --out folder")
        if self.identity_file.exists():
            stored = read_json_document(self.identity_file, RUN_FORMAT, "run description")
            differs = _differences(stored.get("identity"), identity)
            if differs:
                raise InputError(f"{self.root}: holds a different training run (differs in: "
                                 f"{', '.join(differs[:8])}); choose a new --out folder, or --init from its "
                                 f"model to continue training")
            return self.checkpoint.exists()
        if self.root.exists() and any(p.name != LOCK_NAME for p in self.root.iterdir()):
            raise InputError(f"{self.root}: folder is not empty and holds no training run; "
                             f"choose a new or empty --out folder")
        self.root.mkdir(parents=True, exist_ok=True)
        document = {"format": RUN_FORMAT, "version": 1, "identity": identity}
        write_bytes_atomic(json.dumps(document, indent=1).encode("utf-8"), self.identity_file)
        return False

    def release(self) -> None:
        """Undo :meth:`claim` of a run that never trained: remove ``run.json`` and the cache."""
        if self.checkpoint.exists() or self.model.exists():
            raise RuntimeError(f"{self.root}: holds a trained run; not releasing it")
        shutil.rmtree(self.cache, ignore_errors=True)
        self.identity_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # still open (and so kept) on Windows: claim ignores it
            self.lock_file.unlink(missing_ok=True)

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        """``torch.save`` the state through a temporary file (never a half-written checkpoint)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomic(buffer.getvalue(), self.checkpoint)

    def load_checkpoint(self) -> Dict[str, Any]:
        try:
            return torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise InputError(f"{self.checkpoint}: cannot read the checkpoint ({exc})") from None

    def start_log(self, iteration: int) -> None:
        """Keep only log rows up to ``iteration`` (a resumed run repeats the rows after it)."""
        rows: List[Dict[str, str]] = []
        if self.log.exists() and iteration > 0:
            with self.log.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["iteration"]) <= iteration]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_bytes_atomic(text.getvalue().encode("utf-8"), self.log)
        if self.validation.exists():
            kept = [l for l in self.validation.read_text(encoding="utf-8").splitlines()
                    if l.strip() and json.loads(l).get("iteration", 0) <= iteration]
            write_bytes_atomic("".join(l + "\n" for l in kept).encode("utf-8"), self.validation)

    def append_log(self, rows: List[Dict[str, float]]) -> None:
        with self.log.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, lineterminator="\n")
            for row in rows:
                writer.writerow({k: (f"{row[k]:.6g}" if k != "iteration" else int(row[k])) for k in LOG_FIELDS})

    def append_validation(self, record: Dict[str, Any]) -> None:
        with self.validation.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_log(self) -> List[Dict[str, float]]:
        """The CSV log as dicts of floats (``iteration`` as float too)."""
        if not self.log.exists():
            return []
        with self.log.open(newline="", encoding="utf-8") as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def completed_iteration(self) -> Optional[int]:
        """Iteration of the stored checkpoint, or None."""
        if not self.checkpoint.exists():
            return None
        return int(self.load_checkpoint()["iteration"])
