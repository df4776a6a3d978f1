"""Run the engine in a child process and reflect it in the scene (Qt-free).

:class:`SegmentationRun` writes the input volume to a temporary ``.nii.gz``, starts
``<python> -m vertebra_traversal.cli.main segment INPUT -o OUT --model M --device D --events``
(plus ``--start-network U`` when the run overrides the model file's start-network use, ``--no-rescue-network``
when it leaves the rescue network out; in Slicer
``python`` is ``shutil.which("PythonSlicer")``; peers such as SlicerTotalSegmentator also run their
engine out of process), and reads its stdout/stderr on two daemon threads into queues.
The module's QTimer calls :meth:`SegmentationRun.poll`, which applies the queued events (the patch
ROI moves, paper §3.3) and, once the child exited successfully, builds the segmentation node.
:meth:`SegmentationRun.request_cancel` asks the child to stop and returns at once; polling then ends
the child and its children and leaves the scene as it was (:meth:`SegmentationRun.cancel` does the
same and waits): the ROI is removed and no segmentation node exists before the run succeeded.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

import slicer

import vertebra_traversal

from .events import EventStreamReader, LineReader, RunState, apply_event, create_patch_roi, remove_patch_roi
from .results import build_results_table
from .segmentation import build_segmentation_node
from .volumes import write_volume

logger = logging.getLogger(__name__)

#: Folder that holds the ``vertebra_traversal`` package (put on the child's PYTHONPATH).
PACKAGE_PARENT = Path(vertebra_traversal.__file__).resolve().parent.parent
_EOF = object()


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run.

    Attributes:
        python: interpreter of the child (Slicer: ``shutil.which("PythonSlicer")``).
        model: ``"ct"`` / ``"mr"`` (bundled) or a checkpoint path.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        start_network: ``"always"``, ``"fallback"`` or ``"off"`` (``segment --start-network``), or None
            for what the model file records. The child refuses ``always``/``fallback`` for a model of one
            network (exit 2, its message in the run's error).
        rescue_network: run the model's rescue network where the first traversal stalls (False:
            ``segment --no-rescue-network``); a model without one ignores it.
        work_dir: parent of the temporary folder (default: the system temp folder).
        segmentation_name: name of the result node (default ``"<volume> vertebrae"``).
        terminate_timeout_s: grace period after SIGTERM before the process group is killed.
        command: the module to run with ``-m`` and its subcommand; tests may point it elsewhere.
        env: extra environment variables for the child, as (name, value) pairs.
    """

    python: str = sys.executable
    model: str = "ct"
    device: str = "auto"
    start_network: Optional[str] = None
    rescue_network: bool = True
    work_dir: Optional[Path] = None
    segmentation_name: Optional[str] = None
    terminate_timeout_s: float = 5.0
    command: Sequence[str] = ("vertebra_traversal.cli.main", "segment")
    env: Tuple[Tuple[str, str], ...] = ()


def engine_command(config: RunConfig, input_path: Path, out_dir: Path) -> List[str]:
    """The child's argv."""
    module, *sub = config.command
    start = ["--start-network", config.start_network] if config.start_network is not None else []
    rescue = [] if config.rescue_network else ["--no-rescue-network"]
    return [config.python, "-m", module, *sub, str(input_path), "-o", str(out_dir), "--model", config.model,
            "--device", config.device, *start, *rescue, "--events"]


def child_environment(config: RunConfig) -> Dict[str, str]:
    """This process's environment + unbuffered output + the package folder first on PYTHONPATH."""
    env = dict(os.environ)
    env.update(dict(config.env))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p)
    return env


def _pump(stream: IO[bytes], sink: "queue.Queue[Any]") -> None:
    """Thread body: forward raw chunks until end of file, then a sentinel."""
    try:
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            sink.put(chunk)
    except (OSError, ValueError):  # closed under us: the run ended without waiting for this thread
        pass
    finally:
        sink.put(_EOF)


class SegmentationRun:
    """One engine run for one volume, driven by :meth:`poll` (no Qt, no blocking)."""

    def __init__(self, scene: "slicer.vtkMRMLScene", volume_node: "slicer.vtkMRMLScalarVolumeNode",
                 seg_logic: Any, config: RunConfig,
                 target: Optional["slicer.vtkMRMLSegmentationNode"] = None) -> None:
        self.scene = scene
        self.volume_node = volume_node
        self.seg_logic = seg_logic
        self.config = config
        self.target = target
        self.state = RunState()
        self._engine_state = RunState()  # what the events said; ``state`` ends only when the child did
        self.segmentation_node: Optional["slicer.vtkMRMLSegmentationNode"] = None
        self.results_table: Optional["slicer.vtkMRMLTableNode"] = None
        self.log: List[str] = []
        self.returncode: Optional[int] = None
        self._reader = EventStreamReader()
        self._stdout: "queue.Queue[Any]" = queue.Queue()
        self._stderr: "queue.Queue[Any]" = queue.Queue()
        self._open_streams = 0
        self._stderr_tail = b""
        self._stderr_lines = LineReader()
        self._process: Optional[subprocess.Popen] = None
        self._threads: List[threading.Thread] = []
        self._work: Optional[Path] = None
        self._input_path: Optional[Path] = None
        self._roi = None
        self._cancel_deadline: Optional[float] = None
        self._killed = False

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the end of the run."""
        return self._process is not None and not self.state.finished

    def start(self) -> RunState:
        """Write the input, create the patch ROI and start the child process.

        Raises:
            InputError: the volume cannot be written. OSError: the interpreter cannot be started.
            RuntimeError: the run was started before (a run object runs once).
        """
        if self._process is not None:
            raise RuntimeError("this run was started already; create a new SegmentationRun")
        self._work = Path(tempfile.mkdtemp(prefix="VertebraTraversal-", dir=self.config.work_dir))
        try:
            input_path = self._input_path = write_volume(self.volume_node, self._work / "input.nii.gz")
            argv = engine_command(self.config, input_path, self._work / "out")
            logger.info("starting %s", " ".join(argv))
            self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, env=child_environment(self.config),
                                             **_group_kwargs())
        except BaseException:
            self._cleanup_files()
            raise
        self._roi = create_patch_roi(self.scene, self.volume_node.GetTransformNodeID())
        for stream, sink in ((self._process.stdout, self._stdout), (self._process.stderr, self._stderr)):
            thread = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._open_streams = 2
        self.state = replace(self.state, status="Started")
        return self.state

    def poll(self) -> RunState:
        """Apply what the child printed since the last call; finish the run when it has exited."""
        if self._process is None or self.state.finished:
            return self.state
        if self._cancel_deadline is not None:
            return self._poll_cancelling()
        self._drain_stderr()
        self._drain_stdout()
        if self._open_streams == 0 and self._process.poll() is not None:
            self._finish()
        return self.state

    def wait(self, timeout_s: float, interval_s: float = 0.05,
             on_state: Optional[Callable[[RunState], None]] = None) -> RunState:
        """Poll until the run finished or ``timeout_s`` passed (for scripts and tests; the GUI uses a timer)."""
        deadline = time.monotonic() + timeout_s
        while not self.poll().finished and time.monotonic() < deadline:
            if on_state is not None:
                on_state(self.state)
            time.sleep(interval_s)
        return self.state

    def request_cancel(self) -> RunState:
        """Ask the child to stop and return at once (the GUI's Cancel; the event loop never waits).

        SIGTERM goes to the child's process group: the engine stops between two steps (Windows: the
        process tree is ended). :meth:`poll` finishes the run as cancelled once the child has exited,
        and kills the group when it is still running ``terminate_timeout_s`` later.
        """
        if self._process is None or self.state.finished or self._cancel_deadline is not None:
            return self.state
        _terminate_group(self._process)
        self._cancel_deadline = time.monotonic() + self.config.terminate_timeout_s
        self.state = replace(self.state, status="Cancelling")
        return self.state

    def cancel(self) -> RunState:
        """Stop the child (and its children), remove the ROI and the temporary files, and wait for it.

        No segmentation node is created by a cancelled run. A finished run is left as it is. For
        scripts, tests and scene close; the GUI calls :meth:`request_cancel` and keeps polling.
        """
        if self._process is None or self.state.finished:
            return self.state
        self.request_cancel()
        while not self.poll().finished:
            time.sleep(0.02)
        return self.state

    def _poll_cancelling(self) -> RunState:
        """Cancel in progress: SIGKILL after the grace period; give up waiting a grace period later
        (a child stuck in the kernel is left behind, but the run ends and the GUI is free again)."""
        if self._process.poll() is None:
            if time.monotonic() < self._cancel_deadline:
                return self.state
            if not self._killed:
                _kill_group(self._process)
                self._killed = True
                self._cancel_deadline = time.monotonic() + self.config.terminate_timeout_s + 5.0
                return self.state
            logger.warning("engine process %d did not exit after SIGKILL", self._process.pid)
        self._end_cancelled()
        return self.state

    def _end_cancelled(self) -> None:
        _kill_leftovers(self._process)
        self.returncode = self._process.returncode
        self._close_pipes()
        remove_patch_roi(self.scene)
        self._cleanup_files()
        self.state = replace(self.state, cancelled=True, status="Cancelled")

    def _close_pipes(self) -> None:
        """Close the child's stdout / stderr once their reader threads are done (no descriptor leaks);
        a pipe still read (held open by a process outside the group) is left to its daemon thread."""
        for stream, thread in zip((self._process.stdout, self._process.stderr), self._threads):
            thread.join(timeout=0.5)
            if stream is not None and not thread.is_alive():
                stream.close()

    def _drain_stderr(self) -> None:
        while True:
            try:
                chunk = self._stderr.get_nowait()
            except queue.Empty:
                return
            if chunk is _EOF:
                self._open_streams -= 1
                self.log.extend(line.rstrip("\r") for line in self._stderr_lines.close())
                continue
            self._stderr_tail = (self._stderr_tail + chunk)[-4000:]
            self.log.extend(line.rstrip("\r") for line in self._stderr_lines.feed(chunk))

    def _drain_stdout(self) -> None:
        while True:
            try:
                chunk = self._stdout.get_nowait()
            except queue.Empty:
                return
            events = self._reader.close() if chunk is _EOF else self._reader.feed(chunk)
            if chunk is _EOF:
                self._open_streams -= 1
            for event in events:
                self._engine_state = apply_event(self._roi, event, self._engine_state)
            self.state = replace(self._engine_state, done=False, cancelled=False, error=None)
            self.log.extend(self._reader.noise)
            self._reader.noise.clear()

    def _finish(self) -> None:
        self.returncode = self._process.returncode
        self._close_pipes()
        remove_patch_roi(self.scene)
        try:
            if self.returncode == 0 and self.state.outputs:
                self._build()
            elif self._engine_state.cancelled:
                self.state = replace(self.state, cancelled=True, status="Cancelled")
            else:
                message = self._engine_state.error or _last_line(self._stderr_tail) or "no result"
                if self._input_path is not None:  # the engine names its input: the user's volume, not our copy
                    message = message.replace(str(self._input_path), f"volume {self.volume_node.GetName()!r}")
                self.state = replace(self.state, error=f"engine exited with code {self.returncode}: {message}")
        finally:
            self._cleanup_files()

    def _build(self) -> None:
        outputs = self.state.outputs or {}
        table = None
        try:
            table = build_results_table(self.scene, self.volume_node, outputs["report"])
            self.segmentation_node = build_segmentation_node(
                self.scene, self.volume_node, outputs["labels"], outputs["report"], self.seg_logic,
                name=self.config.segmentation_name, target=self.target)
        except Exception as exc:  # report it in the state; the scene keeps no partial node
            logger.exception("building the segmentation failed")
            if table is not None:
                self.scene.RemoveNode(table)
            self.state = replace(self.state, error=f"could not load the result: {exc}")
            return
        self.results_table = table
        self.state = replace(self._engine_state, done=True, fraction=1.0, error=None, cancelled=False)

    def _cleanup_files(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _group_kwargs() -> Dict[str, Any]:
    """Start the child in its own process group / session so that cancel reaches its children too."""
    if os.name == "nt":  # no console window either (as slicer.util.launchConsoleProcess hides it)
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _terminate_group(process: subprocess.Popen) -> None:
    """SIGTERM the child's process group (the engine then stops between two steps); on Windows
    ``taskkill /T /F`` ends the whole tree at once."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False,
                       creationflags=subprocess.CREATE_NO_WINDOW)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):  # gone, or only zombies left (macOS: EPERM)
        pass


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it outlived the grace period); Windows: the tree again."""
    if os.name == "nt":
        _terminate_group(process)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_leftovers(process: subprocess.Popen) -> None:
    """Children of the child that ignored SIGTERM get SIGKILL (the group outlives its leader)."""
    if os.name != "nt":
        _kill_group(process)
