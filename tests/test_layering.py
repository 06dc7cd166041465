"""Imports run one way: pipeline (command line) -> transforms (Beam API) -> anycost (core).

The emulator stands apart from all three, so that the connector's CBF code cannot hide the
emulator's mistakes or the other way round. Checked on the source, so a lazy import inside a
function counts as much as one at the top.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("anycost", "anycost_emulator", "pipeline", "transforms")
FORBIDDEN = {
    "anycost": {"transforms", "pipeline", "anycost_emulator", "tests"},
    "transforms": {"pipeline", "anycost_emulator", "tests"},
    "pipeline": {"anycost_emulator", "tests"},
    "anycost_emulator": {"anycost", "transforms", "pipeline", "tests"},
}


def imported_packages(path):
    """Top-level package names that a module imports, wherever the import statement stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules():
    return [(package, path) for package in PACKAGES for path in sorted((REPO / package).glob("*.py"))]


@pytest.mark.parametrize("package,path", modules(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_imports_run_one_way(package, path):
    wrong = imported_packages(path) & FORBIDDEN[package]
    assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: imports must run one way"


def test_the_checker_sees_a_wrong_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline import main\n    import transforms.sink\n")
    assert imported_packages(module) >= {"pipeline", "transforms"}
