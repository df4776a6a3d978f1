"""The core package must never import slicer, vtk, qt or ctk (it runs outside Slicer and in a child process)."""
import ast
import subprocess
import sys
from pathlib import Path

import vertebra_traversal

FORBIDDEN = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt"}
CORE = Path(vertebra_traversal.__file__).resolve().parent


def _imported_roots(path: Path) -> set:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_source_file_imports_slicer_vtk_qt_ctk():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 5
    offenders = {str(f.relative_to(CORE)): sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_core_module_loads_none_of_them():
    modules = sorted("vertebra_traversal." + ".".join(f.relative_to(CORE).with_suffix("").parts)
                     for f in CORE.rglob("*.py") if f.name != "__init__.py" and "__main__" not in f.name)
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
