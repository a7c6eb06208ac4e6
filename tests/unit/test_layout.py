"""The core's import rules (DESIGN.md "Layout"), read from the source, not from running it.

Every `import` / `from ... import` under evergreen/ counts, at any depth (a function-level
import is still a dependency), except those inside `if TYPE_CHECKING:` blocks. The core is
evergreen/ without evergreen/apps/. Rooms: decisions, engines, adapters, loop, simulation;
the top-level modules (evergreen/*.py) are shared by all.

(a) the core imports no orchestrator or application: prefect, flows, tasks, bench, blocks,
    evergreen.apps;
(b) decisions import the standard library, numpy/pandas/scipy/pydantic, the shared modules
    in DECISION_SHARED and other decisions only;
(c) shared modules import no room;
(d) engines import shared modules, decisions, engines and evergreen.adapters.io only;
(e) adapters import shared modules, decisions, engines and adapters (not loop, simulation);
(f) loop imports anything of the core but simulation; simulation anything of the core.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "evergreen"
ROOMS = ("decisions", "engines", "adapters", "loop", "simulation")
FORBIDDEN_IN_CORE = ("prefect", "flows", "tasks", "bench", "blocks", "evergreen.apps")
DECISION_LIBRARIES = ("numpy", "pandas", "scipy", "pydantic")
DECISION_SHARED = (
    "evergreen.config",
    "evergreen.jsonable",
    "evergreen.times",
    "evergreen.events",
    "evergreen.lineage",
    "evergreen.reports",
    "evergreen.columns",
    "evergreen.aliases",
)

# Imports that break a rule today, in files being reworked elsewhere: being removed. Each
# is (file, imported module); a new violation, or one of these in another file, fails.
ALLOWED: set[tuple[str, str]] = set()  # (file, module) pairs still to be removed; none now


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository, e.g. evergreen/decisions/gate.py
    line: int
    module: str  # absolute dotted name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # an `else:` of TYPE_CHECKING runs
                found += _import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        found += _import_nodes(child)
    return found


def imports_of(path: Path) -> list[Import]:
    """The modules `path` imports (outside TYPE_CHECKING blocks), as absolute names. From
    `from package import name`, `package.name` when that is a module of this repository."""
    rel = path.relative_to(ROOT).as_posix()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    out: list[Import] = []
    for node in _import_nodes(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            out += [Import(rel, node.lineno, alias.name) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            out.append(Import(rel, node.lineno, candidate if _is_module(candidate) else base))
    return list(dict.fromkeys(out))  # `from m import a, b`: m once per line


def _within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _room(module: str) -> str | None:
    """'decisions', ... for a module of a room; 'shared' for a top-level module; 'apps';
    None outside the package."""
    parts = module.split(".")
    if parts[0] != "evergreen":
        return None
    if len(parts) == 1:
        return "shared"
    if parts[1] in (*ROOMS, "apps"):
        return parts[1]
    return "shared"


def violation(imp: Import) -> str | None:
    """Why `imp` breaks a rule, or None."""
    source = _room(imp.file.removesuffix(".py").replace("/", "."))
    target = imp.module
    if source == "apps":
        return None
    if _within(target, FORBIDDEN_IN_CORE):
        return "(a) the core imports no orchestrator, application, bench, flows, tasks or blocks"
    room = _room(target)
    if source == "decisions":
        top = target.split(".")[0]
        if room is None and not (top in sys.stdlib_module_names or top in DECISION_LIBRARIES):
            return f"(b) decisions import only the standard library and {', '.join(DECISION_LIBRARIES)}"
        if room is not None and room != "decisions" and not _within(target, DECISION_SHARED):
            return f"(b) decisions import only other decisions and {', '.join(DECISION_SHARED)}"
    elif source == "shared":
        if room in ROOMS:
            return "(c) shared modules import no room"
    elif source == "engines":
        if room in ("adapters", "loop", "simulation") and target != "evergreen.adapters.io":
            return "(d) engines import shared modules, decisions, engines and evergreen.adapters.io only"
    elif source == "adapters":
        if room in ("loop", "simulation"):
            return "(e) adapters import shared modules, decisions, engines and adapters only"
    elif source == "loop" and room == "simulation":
        return "(f) loop steps do not import the simulation"
    return None


def _violations() -> list[tuple[Import, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for imp in imports_of(path):
            why = violation(imp)
            if why is not None:
                found.append((imp, why))
    return found


def test_core_imports_follow_the_layout_rules() -> None:
    found = _violations()
    for imp, why in found:  # every one, allowed or not, for whoever reads the log
        allowed = " (allowed for now)" if (imp.file, imp.module) in ALLOWED else ""
        print(f"{imp.file}:{imp.line}: imports {imp.module}: {why}{allowed}")
    new = [
        f"{imp.file}:{imp.line}: imports {imp.module}: {why}"
        for imp, why in found
        if (imp.file, imp.module) not in ALLOWED
    ]
    assert not new, "import rules broken (DESIGN.md Layout):\n" + "\n".join(new)


def test_every_allowed_violation_still_exists() -> None:
    """An allowance whose import is gone is removed from ALLOWED, so it cannot come back."""
    present = {(imp.file, imp.module) for imp, _ in _violations()}
    stale = sorted(ALLOWED - present)
    assert not stale, f"no longer imported: remove from ALLOWED in {__file__}: {stale}"


def test_the_rules_see_what_they_must() -> None:
    """The parser and the rules on known cases: nested and relative imports count,
    TYPE_CHECKING ones do not."""
    code = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "from . import gate\n"
        "from ..engines import monitoring\n"
        "if TYPE_CHECKING:\n"
        "    from evergreen.engines.training import TrainedModel\n"
        "def f():\n"
        "    import prefect\n"
        "    from evergreen.adapters.io import read_table\n"
    )
    assert [n.lineno for n in _import_nodes(ast.parse(code))] == [1, 2, 3, 4, 5, 9, 10]
    probe = [
        Import("evergreen/decisions/x.py", 1, m)
        for m in (
            "numpy",
            "evergreen.decisions.gate",
            "evergreen.engines.monitoring",
            "prefect",
            "evergreen.adapters.io",
            "xgboost",
            "evergreen.config",
        )
    ]
    assert [violation(i) is None for i in probe] == [True, True, False, False, False, False, True]
    assert violation(Import("evergreen/engines/snapshot.py", 1, "evergreen.adapters.io")) is None
    assert violation(Import("evergreen/engines/x.py", 1, "evergreen.adapters.registry"))
    assert violation(Import("evergreen/adapters/x.py", 1, "evergreen.loop.sources"))
    assert violation(Import("evergreen/loop/x.py", 1, "evergreen.simulation.stream"))
    assert violation(Import("evergreen/simulation/x.py", 1, "evergreen.loop.sources")) is None
    assert violation(Import("evergreen/times.py", 1, "evergreen.decisions.gate"))
    assert violation(Import("evergreen/apps/cli.py", 1, "prefect")) is None
    assert _module_name(PACKAGE / "adapters" / "__init__.py") == "evergreen.adapters"
