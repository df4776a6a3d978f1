"""Static checks of the Slicer module that cannot run outside Slicer: the .ui has every widget the
module uses and binds every parameter, CMake lists files that exist and ships the whole engine
package, the library stays Qt-free, the icons are 128 x 128."""
import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from fnmatch import fnmatch
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "VertebraTraversal"
MODULE = MODULE_DIR / "VertebraTraversal.py"
UI = MODULE_DIR / "Resources" / "UI" / "VertebraTraversal.ui"
CMAKE = MODULE_DIR / "CMakeLists.txt"


def _ui_widgets():
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameter_names(widget):
    return [p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]


def _module_tree():
    return ast.parse(MODULE.read_text(encoding="utf-8"))


def test_every_self_ui_name_exists_in_the_ui_file():
    used = {node.attr for node in ast.walk(_module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert {"segmentButton", "cancelButton", "exportButton", "progressBar", "statusLabel", "logTextEdit"} <= used
    assert sorted(used - set(_ui_widgets())) == []


def test_parameter_node_fields_and_gui_bindings_match():
    tree = _module_tree()
    params = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VertebraTraversalParameterNode")
    fields = {n.target.id for n in params.body if isinstance(n, ast.AnnAssign)}
    assert {"inputVolume", "model", "modelPath", "device", "outputSegmentation"} <= fields
    bound = {name: widget.get("class") for widget in _ui_widgets().values() for name in _parameter_names(widget)}
    assert set(bound) == fields
    assert bound["inputVolume"] == "qMRMLNodeComboBox" and bound["model"] == "QComboBox"
    assert bound["modelPath"] == "ctkPathLineEdit" and bound["device"] == "QComboBox"
    assert bound["startNetwork"] == "QComboBox" and bound["rescueNetwork"] == "QCheckBox"


def test_start_network_choices_are_the_engines_after_the_models_own():
    from vertebra_traversal.metadata import START_USES
    values = {n.targets[0].id: n.value for n in _module_tree().body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    default = ast.literal_eval(values["START_NETWORK_DEFAULT"])
    choices = [ast.literal_eval(e) if not isinstance(e, ast.Name) else {"START_NETWORK_DEFAULT": default}[e.id]
               for e in values["START_NETWORK_CHOICES"].elts]
    assert choices == [default, *START_USES] and default not in START_USES


def test_ui_custom_widgets_are_declared():
    root = ET.parse(UI).getroot()
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert sorted(c for c in used if not c.startswith("Q") and c not in declared) == []


def _cmake_lists(text):
    """``set(NAME a b ...)`` and ``file(GLOB_RECURSE var RELATIVE dir CONFIGURE_DEPENDS patterns...)``."""
    text = re.sub(r"#[^\n]*", "", text).replace("${MODULE_NAME}", "VertebraTraversal")
    sets = {m.group(1): m.group(2).split() for m in re.finditer(r"set\((\w+)\s+([^)]*)\)", text)}
    globs = {m.group(1): m.group(2).split() for m in
             re.finditer(r"file\(GLOB_RECURSE\s+(\w+)\s+RELATIVE\s+\S+\s+CONFIGURE_DEPENDS\s+([^)]*)\)", text)}
    return sets, globs


def test_every_file_listed_in_cmake_exists_and_the_library_is_complete():
    sets, _ = _cmake_lists(CMAKE.read_text(encoding="utf-8"))
    listed = sets["MODULE_PYTHON_SCRIPTS"] + sets["MODULE_PYTHON_RESOURCES"]
    assert "VertebraTraversal.py" in listed and "Resources/UI/VertebraTraversal.ui" in listed
    assert sorted(p for p in listed if not (MODULE_DIR / p).is_file()) == []
    models = sorted(p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources" / "Models").iterdir())
    assert "Resources/Models/ct.pt" in models and sorted(p for p in models if p not in listed) == []
    library = sorted(str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "VertebraTraversalLib").glob("*.py"))
    assert sorted(p for p in library if p not in listed) == []


def test_cmake_globs_ship_the_whole_engine_package():
    _, globs = _cmake_lists(CMAKE.read_text(encoding="utf-8"))
    patterns = [p for values in globs.values() for p in values]
    package = [p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "vertebra_traversal").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    assert "vertebra_traversal/data/anatomy.csv" in package
    unshipped = sorted(f for f in package if not any(fnmatch(f, pattern) for pattern in patterns))
    assert unshipped == []


def test_extension_cmake_follows_the_slicer_template():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needle in ("project(VertebraTraversal)", "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   'EXTENSION_DEPENDS "PyTorch"', "find_package(Slicer REQUIRED)", "add_subdirectory(VertebraTraversal)",
                   "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert needle in text, needle
    module = CMAKE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in module
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module


def test_self_test_class_exists_and_runs_the_scenario():
    tree = _module_tree()
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VertebraTraversalTest")
    assert [b.id for b in test_class.bases] == ["ScriptedLoadableModuleTest"]
    methods = {n.name for n in test_class.body if isinstance(n, ast.FunctionDef)}
    assert {"runTest", "setUp", "test_SegmentPhantomAndExport"} <= methods
    assert "skip" not in ast.unparse(test_class).lower()


@pytest.mark.parametrize("path", sorted((MODULE_DIR / "VertebraTraversalLib").glob("*.py")), ids=lambda p: p.name)
def test_library_never_uses_qt_ctk_or_the_application(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert roots & {"qt", "ctk", "PythonQt"} == set()
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("app", "mrmlScene", "modules")
                and isinstance(n.value, ast.Name) and n.value.id == "slicer"]


def test_icons_are_128_pixels_square():
    for path in (MODULE_DIR / "Resources" / "Icons" / "VertebraTraversal.png", ROOT / "VertebraTraversal.png"):
        with Image.open(path) as image:
            assert image.size == (128, 128) and image.format == "PNG"


def test_requirements_are_plain_requirement_lines():
    lines = [line.strip() for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+([<>=!~]=?[0-9.]+)?", line) for line in lines)
    assert not any(line.lower().startswith("torch") for line in lines)  # torch comes via the PyTorch extension


def test_what_the_slicer_process_imports_leaves_torch_to_the_child_process():
    """The module and its self-test import the library and parts of the engine inside Slicer; torch
    (about 1 GB, possibly not installed yet) must only ever load in the engine's child process."""
    modules = {"VertebraTraversalLib"}
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                "vertebra_traversal", "VertebraTraversalLib"):
            modules.add(node.module)
    assert "vertebra_traversal.phantom.sample" in modules
    code = ("import importlib, sys\n"
            f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
            f"for m in {sorted(modules)!r}: importlib.import_module(m)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'torch')[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
