"""Package layout rules: ``verity.cli`` is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import verity

SRC = Path(verity.__file__).parent
#: ``python -m verity`` must reach the CLI: the one module outside cli/ allowed to import it.
ENTRY_POINT = Path("__main__.py")


def cli_imports(source: str, package: str = "verity") -> list[str]:
    """Modules under ``verity.cli`` that ``source`` imports (absolute, relative or via import_module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        found += [n for n in names if n == "verity.cli" or n.startswith("verity.cli.")]
    return found


def test_cli_imports_detects_every_form():
    assert cli_imports("from verity.cli.derive import flag")
    assert cli_imports("import verity.cli.main")
    assert cli_imports("from verity import cli")
    assert cli_imports("from ..cli import derive", package="verity.eval")
    assert cli_imports("importlib.import_module('verity.cli.eval_cmd')")
    assert not cli_imports("from verity.config import flag\nimport verity.client_utils")


def test_nothing_outside_cli_imports_verity_cli():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "cli" or rel == ENTRY_POINT:
            continue
        package = ".".join(("verity", *rel.parent.parts))
        hits = cli_imports(path.read_text(encoding="utf-8"), package)
        if hits:
            offenders[str(rel)] = hits
    assert not offenders, f"library modules import the CLI (move the helper out of cli/): {offenders}"



def test_version_has_one_source_and_py_typed_ships():
    from importlib.metadata import version

    assert verity.__version__ == version("verity")
    assert (SRC / "py.typed").is_file()


def test_star_import_gives_every_public_name():
    ns: dict[str, object] = {}
    exec("from verity import *", ns)
    assert [n for n in verity.__all__ if n not in ns] == []
    assert {"Environment", "MultiTurnEnv", "RLTrainer", "load_environment"} <= set(ns)
