"""3D Slicer scripted module "Vertebra Traversal" (thin): parameter node, widget, logic, self-test.

All MRML work is in the Qt-free ``VertebraTraversalLib``; the engine (``vertebra_traversal``, Lessmann
et al. 2019) runs in a child ``PythonSlicer`` process and is polled with a QTimer, so Slicer stays
responsive, the patch ROI moves live and Cancel works.
"""
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import ctk  # noqa: F401  (widgets of the .ui)
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODEL_CHOICES = ["CT (bundled)", "MR (bundled)", "File"]
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
#: When a model's start network runs (``segment --start-network``); the first entry keeps the file's choice.
START_NETWORK_DEFAULT = "as the model says"
START_NETWORK_CHOICES = [START_NETWORK_DEFAULT, "always", "fallback", "off"]
MODALITY_CHOICES = ["ct", "mr"]
POLL_INTERVAL_MS = 100
PAPER = ("N. Lessmann, B. van Ginneken, P. A. de Jong, I. Išgum. Iterative fully convolutional neural networks "
         "for automatic vertebra segmentation and identification. Medical Image Analysis 53 (2019) 142-155.")


class VertebraTraversal(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Vertebra Traversal"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["VertebraTraversal contributors"]
        self.parent.helpText = (
            "Segments and labels the vertebrae of a CT or MR volume with an iterative fully convolutional "
            "network that travels along the spine (a box ROI shows the patch), and flags vertebrae that are "
            "not completely visible. Correct the result in Segment Editor (rename a segment to relabel it) "
            "and use <b>Export for training</b> to fine-tune the model on your data. "
            "The bundled models were trained on synthetic phantoms only: not for clinical use.")
        self.parent.acknowledgementText = f"This module implements the method of: {PAPER}"


@parameterNodeWrapper
class VertebraTraversalParameterNode:
    """User-facing settings, bound to the GUI with connectGui (dynamic property SlicerParameterName)."""

    inputVolume: vtkMRMLScalarVolumeNode
    model: Annotated[str, Choice(MODEL_CHOICES)] = "CT (bundled)"
    modelPath: Path
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    startNetwork: Annotated[str, Choice(START_NETWORK_CHOICES)] = START_NETWORK_DEFAULT
    rescueNetwork: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    datasetFolder: Path
    caseId: str = ""
    exportModality: Annotated[str, Choice(MODALITY_CHOICES)] = "ct"


class VertebraTraversalWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._logLines = 0
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VertebraTraversal.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = VertebraTraversalLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.readingButton.connect("clicked(bool)", self.onSwitchReading)
        self._timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopRun()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            images = [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]  # the selector hides label maps
            if images:
                self._parameterNode.inputVolume = images[0]

    def setParameterNode(self, parameterNode: Optional[VertebraTraversalParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        params = self._parameterNode
        running = self._run is not None and self._run.running
        self.ui.modelPathLineEdit.enabled = params is not None and params.model == "File"
        self.ui.segmentButton.enabled = bool(params and params.inputVolume) and not running
        self.ui.cancelButton.enabled = running
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputSegmentationSelector):
            widget.enabled = not running  # the run's volume and target stay what they were at its start
        self.ui.exportButton.enabled = bool(params and params.inputVolume and params.outputSegmentation
                                            and params.caseId and str(params.datasetFolder) not in ("", "."))
        self.ui.readingButton.enabled = not running and _otherReadingOffered(params.outputSegmentation if params else None)

    def onSegment(self) -> None:
        params = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            self.logic.ensureDependencies(ask=True)
            startNetwork = None if params.startNetwork == START_NETWORK_DEFAULT else params.startNetwork
            self._run = self.logic.startSegmentation(params.inputVolume, self.logic.modelSpec(params), params.device,
                                                     params.outputSegmentation, startNetwork, params.rescueNetwork)
            self._logLines = 0
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._timer.start()
        self._updateButtons()

    def onPoll(self) -> None:
        if self._run is None:
            self._stopPolling()
            return
        try:
            self._applyPoll()
        except Exception as exc:  # a QTimer slot must not raise: stop the run and say why, once
            self._stopPolling()
            try:
                self._run.cancel()
            except Exception:
                logging.exception("stopping the engine after a polling error failed")
                self._run = None  # free the module; the child may be left behind
            finally:
                slicer.util.errorDisplay(f"Vertebra Traversal stopped: {exc}")
                self._updateButtons()

    def _stopPolling(self) -> None:
        """Stop the timer; the progress bar leaves its busy state (shown until a patch says how far it is)."""
        self._timer.stop()
        self.ui.progressBar.maximum = 100

    def _applyPoll(self) -> None:
        state = self._run.poll()
        self.ui.progressBar.maximum = 0 if self._run.running and state.fraction <= 0 else 100
        self.ui.progressBar.value = int(round(100 * state.fraction))
        self.ui.statusLabel.text = state.status
        for line in self._run.log[self._logLines:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._logLines = len(self._run.log)
        if state.finished:
            self._stopPolling()
            self._onFinished(state)

    def _onFinished(self, state) -> None:
        if state.done and self._run.segmentation_node is not None:
            self._parameterNode.outputSegmentation = self._run.segmentation_node
            self._run.segmentation_node.SetDisplayVisibility(True)
            self.ui.resultsTableView.setMRMLTableNode(self._run.results_table)
            self.ui.resultsCollapsibleButton.collapsed = False
            # through the parameter node: the GUI may be disconnected (another module is shown)
            self._parameterNode.caseId = self._parameterNode.caseId or self.logic.defaultCaseId(self._run.volume_node)
            if state.modality in MODALITY_CHOICES:  # an export of this result is of the model's modality
                self._parameterNode.exportModality = state.modality
        elif state.cancelled:
            self.ui.progressBar.value = 0
        elif state.error:
            slicer.util.errorDisplay(f"Vertebra Traversal failed:\n{state.error}")
        self._updateButtons()

    def onCancel(self) -> None:
        """Ask the engine to stop; the timer keeps polling until it has (Slicer does not wait)."""
        if self._run is not None and self._run.running:
            self.ui.statusLabel.text = self._run.request_cancel().status
            self.ui.cancelButton.enabled = False

    def _stopRun(self) -> None:
        """Stop a running engine and wait for it (the module or the scene is closing)."""
        self._stopPolling()
        if self._run is not None and self._run.running:
            self._run.cancel()

    def onSwitchReading(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not rename the vertebrae.", waitCursor=True):
            changed = self.logic.switchReading(self._parameterNode.outputSegmentation)
            self.ui.statusLabel.text = f"{changed} vertebrae renamed by the other reading"
        self._updateButtons()

    def onExport(self) -> None:
        params = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            self.logic.ensureDependencies(ask=True, withTorch=False)
            from VertebraTraversalLib import warnings_collected
            with warnings_collected() as warnings:
                files = self.logic.exportCase(params.outputSegmentation, params.inputVolume, params.datasetFolder,
                                              params.caseId, params.exportModality)
            written = f"Wrote case {params.caseId}:\n{files.image}\n{files.labels}\n{files.sidecar}"
            slicer.util.infoDisplay(written + "".join(f"\n\nWarning: {text}" for text in warnings))


class VertebraTraversalLogic(ScriptedLoadableModuleLogic):
    """Runs the engine for a volume and exports corrected cases; usable without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> VertebraTraversalParameterNode:
        return VertebraTraversalParameterNode(super().getParameterNode())

    @staticmethod
    def modelSpec(params: VertebraTraversalParameterNode) -> str:
        """``"ct"``, ``"mr"`` or the chosen checkpoint path."""
        if params.model == "File":
            if str(params.modelPath) in ("", ".") or not Path(params.modelPath).is_file():
                raise ValueError(f"Model file not found: {params.modelPath}")
            return str(params.modelPath)
        return "mr" if params.model.startswith("MR") else "ct"

    @staticmethod
    def pythonExecutable() -> str:
        """The interpreter for the child process: Slicer's ``PythonSlicer`` launcher."""
        found = shutil.which("PythonSlicer") or shutil.which("PythonSlicer", path=os.path.dirname(sys.executable))
        if not found:
            raise RuntimeError("PythonSlicer was not found next to Slicer; cannot start the engine")
        return found

    def ensureDependencies(self, ask: bool = True, withTorch: bool = True) -> None:
        """torch through the PyTorch extension (else pip), the rest from Resources/requirements.txt.

        ``withTorch=False`` for export, which does not need torch. Never prompts under Slicer's test runner
        (``--testing``): missing packages are then installed without asking, as a clean test machine needs them.
        """
        ask = ask and not slicer.app.testingEnabled()
        if withTorch:
            self._ensureTorch(ask)
        requirements = Path(__file__).parent / "Resources" / "requirements.txt"
        missing = [line.strip() for line in requirements.read_text().splitlines()
                   if line.strip() and not line.startswith("#") and not _distributionInstalled(line)]
        if missing and (not ask or slicer.util.confirmOkCancelDisplay(
                f"Vertebra Traversal needs these Python packages: {', '.join(missing)}. Install them now?")):
            slicer.util.pip_install(" ".join(missing))
        elif missing:
            raise RuntimeError(f"Missing Python packages: {', '.join(missing)}")

    @staticmethod
    def _ensureTorch(ask: bool) -> None:
        if _distributionInstalled("torch"):  # checked without importing torch into Slicer's own process
            return
        try:
            import PyTorchUtils  # the PyTorch extension
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.installTorch(askConfirmation=ask) is None:
                raise RuntimeError("PyTorch is required; install it from the PyTorch module")
            return
        if ask and not slicer.util.confirmOkCancelDisplay(
                "Vertebra Traversal needs PyTorch (about 1 GB). Install the PyTorch extension for the best "
                "build for your GPU, or press OK to pip-install the default build now."):
            raise RuntimeError("PyTorch is required")
        slicer.util.pip_install("torch")

    def startSegmentation(self, volume, model: str = "ct", device: str = "auto", target=None,
                          startNetwork: Optional[str] = None, rescueNetwork: bool = True):
        """Start the child process; poll the returned run (``poll()``/``cancel()``).

        ``startNetwork``: ``"always"``, ``"fallback"``, ``"off"`` or None (the model file's choice);
        ``rescueNetwork``: False leaves a model's rescue network out (``segment --no-rescue-network``)."""
        from VertebraTraversalLib import RunConfig, SegmentationRun
        config = RunConfig(python=self.pythonExecutable(), model=model, device=device, start_network=startNetwork,
                           rescue_network=rescueNetwork, work_dir=Path(slicer.app.temporaryPath))
        run = SegmentationRun(slicer.mrmlScene, volume, slicer.modules.segmentations.logic(), config, target)
        run.start()
        return run

    def segment(self, volume, model: str = "ct", device: str = "auto", timeout_s: float = 1800.0, target=None,
                startNetwork: Optional[str] = None, rescueNetwork: bool = True):
        """Blocking variant (scripts, self-test) of :meth:`startSegmentation`, with the same options:
        returns the run once it finished (cancelled after ``timeout_s``)."""
        run = self.startSegmentation(volume, model, device, target, startNetwork, rescueNetwork)
        run.wait(timeout_s, on_state=lambda state: slicer.app.processEvents())
        if run.running:
            run.cancel()
        return run

    @staticmethod
    def defaultCaseId(volume) -> str:
        """A case id the export accepts, made from the volume's name (``"3: CT Chest"`` -> ``"3_CT_Chest"``)."""
        from vertebra_traversal.export import case_id_from_name
        return case_id_from_name(volume.GetName())

    @staticmethod
    def switchReading(segmentation) -> int:
        """Rename the vertebrae by the other reading of their labels (counted from the ribs, or the network's
        own), where the run made one; returns how many changed (``VertebraTraversalLib.switch_reading``)."""
        from VertebraTraversalLib import switch_reading
        return switch_reading(segmentation)

    def exportCase(self, segmentation, volume, datasetFolder, caseId: str, modality: str = "ct"):
        """Write the corrected segmentation + volume as a new dataset case (never overwrites)."""
        from VertebraTraversalLib import export_segmentation_case
        return export_segmentation_case(slicer.mrmlScene, segmentation, volume, Path(datasetFolder), caseId,
                                        slicer.modules.segmentations.logic(), modality)


def _otherReadingOffered(segmentation) -> bool:
    """Whether the run behind ``segmentation`` read its labels two ways; False while the library's packages are
    not installed yet (no run can have made it then)."""
    try:
        from VertebraTraversalLib import other_reading_offered
    except ImportError:
        return False
    return other_reading_offered(segmentation)


def _distributionInstalled(requirement: str) -> bool:
    """True when the distribution is installed in a version the requirement line allows."""
    import importlib.metadata
    from packaging.requirements import Requirement  # bundled with Slicer's Python (pip needs it)
    wanted = Requirement(requirement.strip())
    try:
        version = importlib.metadata.version(wanted.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return wanted.specifier.contains(version, prereleases=True)


class VertebraTraversalTest(ScriptedLoadableModuleTest):
    """Same scenario as Testing/slicer/test_end_to_end.py, inside Slicer: phantom -> engine child
    process with the bundled CT model -> segmentation node -> export -> read back."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegmentPhantomAndExport()

    def test_SegmentPhantomAndExport(self) -> None:
        self.delayDisplay("Checking the Python packages (installed without asking when missing)")
        logic = VertebraTraversalLogic()
        logic.ensureDependencies(ask=False)

        import numpy as np
        import SimpleITK as sitk
        from vertebra_traversal import dataset
        from vertebra_traversal.phantom.sample import SAMPLE_CONFIG, SAMPLE_SEED
        from vertebra_traversal.imageio import read_label_map, write_image_atomic
        from vertebra_traversal.phantom import generate_case
        from VertebraTraversalLib import load_volume, segment_tag

        self.delayDisplay("Generating the sample CT phantom")
        work = Path(tempfile.mkdtemp(prefix="VertebraTraversalTest-", dir=slicer.app.temporaryPath))
        phantom = generate_case(SAMPLE_SEED, SAMPLE_CONFIG, case_id="selftest")
        volume = load_volume(slicer.mrmlScene, write_image_atomic(phantom.image, work / "phantom_ct.nii.gz"), "phantom")

        self.delayDisplay("Segmenting with the bundled CT model")
        run = logic.segment(volume, "ct", "auto", timeout_s=900)
        self.assertTrue(run.state.done, f"{run.state} {run.log[-5:]}")
        self.assertIsNone(slicer.mrmlScene.GetFirstNodeByName("Traversal patch"))
        segmentation = run.segmentation_node.GetSegmentation()
        self.assertGreater(segmentation.GetNumberOfSegments(), 0)
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            complete = segment_tag(segment, "VertebraTraversal.complete")
            self.assertIn(complete, ("true", "false"))
            self.assertEqual(segment.GetName().endswith("(incomplete)"), complete == "false")
        table = run.results_table.GetTable()  # the same vertebrae in the results table, top first
        self.assertEqual([table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())],
                         [segmentation.GetNthSegment(i).GetName().replace(" (incomplete)", "")
                          for i in range(segmentation.GetNumberOfSegments())])

        self.delayDisplay("Exporting for training")
        files = logic.exportCase(run.segmentation_node, volume, work / "dataset", "selftest", "ct")
        info = dataset.read_case_info(files)
        self.assertEqual(len(info.vertebrae), segmentation.GetNumberOfSegments())
        exported = sitk.GetArrayFromImage(read_label_map(files.labels, reference=sitk.ReadImage(str(files.image))))
        truth = sitk.GetArrayFromImage(phantom.labels)
        z, y, x = np.nonzero(truth)  # chance: the vertebrae's and the bone's fraction of the spine's box
        box = tuple(slice(a.min(), a.max() + 1) for a in (z, y, x))
        chance = float(np.mean(truth[box] > 0))
        hu = sitk.GetArrayFromImage(phantom.image)
        bone_chance = float(np.mean(hu[box] > 200))
        self.assertGreater(float(np.mean(truth[exported > 0] > 0)), 2 * chance)  # what was found is spine
        self.assertGreater(float(np.mean(exported[truth > 0] > 0)), 0.5)  # and covers most of it
        for record in info.vertebrae:  # every one is bone; complete ones lie on vertebrae (§3.5: fragments
            inside = exported == record.label  # flagged incomplete are kept and may be other bone)
            self.assertGreater(float(np.mean(hu[inside] > 200)), bone_chance, record.name)
            if record.complete:
                self.assertGreater(float(np.mean(truth[inside] > 0)), chance, record.name)
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay("Test passed")
