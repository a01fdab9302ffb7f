"""The package's layers (issue 21, item 5): import-linter's contracts in .importlinter hold, no decinv module imports
another's private names, and no decinv module imports a decinv module inside a function (the way import cycles were
dodged). Known exceptions outside the benchmarks are listed here by name; a new one fails, a fixed one warns."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "decinv"

# (importing module, imported module, private name) triples allowed: none.
PRIVATE_ALLOWED: set = set()

# (importing module, imported module) pairs imported inside a function on purpose: the command line imports the
# library when a command runs, so that `decinv --help` and argument errors answer without importing torch models.
FUNCTION_LEVEL_ALLOWED = {
    ("decinv.cli", "decinv"),
    ("decinv.cli", "decinv.generation.experiments"),
    ("decinv.cli", "decinv.core.images"),
    ("decinv.cli", "decinv.applications.jobs"),
    ("decinv.cli", "decinv.core.solvers"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def resolve(name: str, node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module an ImportFrom reads from (relative imports resolved against ``importer``)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(importer: str, path: Path, known: dict[str, Path]) -> set[tuple[str, str, str]]:
    """(importer, module, name) for every private ``name`` of another decinv module that ``importer`` uses: ``from
    decinv.x import _y``, or ``x._y`` / ``decinv.x._y`` on a decinv module bound by an import."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found, aliases = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(node.module, node, importer, is_package)
            if not source.startswith("decinv"):
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in known:  # a submodule, not a name
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif is_private(alias.name) and source != importer:
                    found.add((importer, source, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("decinv"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "decinv"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = ".".join([aliases[value.id], *chain])
                if target in known and target != importer:
                    found.add((importer, target, node.attr))
    return found


def function_level_imports(importer: str, path: Path, known: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, module) for every decinv module imported inside a function or method body (``from decinv import
    x`` counts as importing ``decinv.x`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                found |= {(importer, a.name) for a in node.names if a.name.split(".")[0] == "decinv"}
            elif isinstance(node, ast.ImportFrom):
                source = resolve(node.module, node, importer, is_package)
                if source.split(".")[0] == "decinv":
                    found |= {(importer, f"{source}.{a.name}" if f"{source}.{a.name}" in known else source)
                              for a in node.names}
    return found


def check_against(found: set, allowed: set, what: str) -> None:
    new = sorted(found - allowed)
    assert not new, f"{what} (not allowed; see tests/test_layers.py): {new}"
    fixed = sorted(allowed - found)
    if fixed:
        warnings.warn(f"{what}: allowed but gone, remove from tests/test_layers.py: {fixed}", stacklevel=2)


def test_import_contracts_hold():
    """lint-imports reads .importlinter from the repository root and exits 0 only when every contract is kept."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "broken" in run.stdout and "0 broken" in run.stdout


def test_no_private_names_across_modules():
    known = modules()
    found = set().union(*(private_imports(name, path, known) for name, path in known.items()))
    check_against(found, PRIVATE_ALLOWED, "private names imported across decinv modules")


def test_no_imports_of_decinv_inside_functions():
    known = modules()
    found = set().union(*(function_level_imports(name, path, known) for name, path in known.items()))
    check_against(found, FUNCTION_LEVEL_ALLOWED, "decinv modules imported inside functions")


def test_the_checks_see_what_they_look_for(tmp_path):
    """The two AST checks on a made-up module: each kind of offence is found, public names and top-level imports
    are not."""
    path = tmp_path / "mod.py"
    path.write_text("import decinv.core.models as m\nfrom decinv.applications import jobs\n"
                    "from decinv.core.metrics import psnr, _hidden\nimport decinv\n\ndef f():\n"
                    "    from decinv.core.solvers import invert\n    from decinv.applications import jobs\n"
                    "    return m._offline, jobs._dist_env, decinv.core.models._x, m.load_model, m.__name__\n")
    known = {"decinv.core.models": None, "decinv.applications.jobs": None, "decinv.core.metrics": None,
             "decinv.core.solvers": None, "decinv.fake": None}
    assert private_imports("decinv.fake", path, known) == {
        ("decinv.fake", "decinv.core.metrics", "_hidden"), ("decinv.fake", "decinv.core.models", "_offline"),
        ("decinv.fake", "decinv.applications.jobs", "_dist_env"), ("decinv.fake", "decinv.core.models", "_x")}
    assert function_level_imports("decinv.fake", path, known) == {("decinv.fake", "decinv.core.solvers"),
                                                                  ("decinv.fake", "decinv.applications.jobs")}
