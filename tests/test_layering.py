"""Imports run one way: pipeline (command line) -> transforms (Beam API) -> anycost (core).

The emulator stands apart from all three, so that the connector's CBF code cannot hide the
emulator's mistakes or the other way round. Inside the core, the stages run one way too:
foundation (cbf, config, wire) -> inputs -> bodies -> delivery -> outcomes; a stage never
imports a later one. Checked on the source, so a lazy import inside a function counts as much
as one at the top.
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


STAGES = ("foundation", "inputs", "bodies", "delivery", "outcomes")


def imported_modules(path):
    """Dotted module names that a module imports, wherever the import statement stands;
    `from anycost import cbf` counts as `anycost.cbf`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path):
    """Top-level package names that a module imports."""
    return {name.split(".")[0] for name in imported_modules(path)}


def stage_of(dotted):
    """The core stage of an `anycost...` module name: its sub-package, or the foundation."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES[1:] else "foundation"


def modules():
    return [(package, path) for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]


def core_modules():
    return sorted((REPO / "anycost").rglob("*.py"))


def core_stage_problems(path, root):
    """Imports of `path` (a module under `root`/anycost) that reach a later stage than its own."""
    relative = path.relative_to(root / "anycost")
    own = relative.parts[0] if len(relative.parts) > 1 else "foundation"
    return sorted(name for name in imported_modules(path)
                  if name.split(".")[0] == "anycost" and STAGES.index(stage_of(name)) > STAGES.index(own))


@pytest.mark.parametrize("package,path", modules(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_imports_run_one_way(package, path):
    wrong = imported_packages(path) & FORBIDDEN[package]
    assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: imports must run one way"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_core_stages_run_one_way(path):
    wrong = core_stage_problems(path, REPO)
    assert not wrong, (f"{path.relative_to(REPO)} imports {wrong}, a later stage: the core runs "
                       f"{' -> '.join(STAGES)}")


def test_every_core_module_sits_in_a_stage():
    for path in core_modules():
        relative = path.relative_to(REPO / "anycost")
        assert len(relative.parts) == 1 or relative.parts[0] in STAGES[1:], relative


def test_the_stage_checker_sees_a_backward_import(tmp_path):
    inputs = tmp_path / "anycost" / "inputs"
    inputs.mkdir(parents=True)
    module = inputs / "m.py"
    module.write_text("from anycost import cbf\ndef f():\n    from anycost.delivery import sender\n")
    assert core_stage_problems(module, tmp_path) == ["anycost.delivery", "anycost.delivery.sender"]
    foundation = tmp_path / "anycost" / "wire.py"
    foundation.write_text("from anycost import inputs\n")
    assert core_stage_problems(foundation, tmp_path) == ["anycost.inputs"]


def test_the_checker_sees_a_wrong_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline import main\n    import transforms.sink\n")
    assert imported_packages(module) >= {"pipeline", "transforms"}
