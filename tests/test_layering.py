"""The folders are the architecture: which package may import what, and no import cycle.

Read from the source (every import statement, the lazy ones inside functions included), so a
rule holds for code paths a run does not happen to take. ``test_injector`` and
``test_campaign_spec`` check the same at run time for the fault core and ``pytei_ray.campaign``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytei_ray"
CORE = ("pytei_ray.faults", "pytei_ray.injection", "pytei_ray.mitigations", "pytei_ray.training")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in module ``name``; ``from m import x``
    names ``m.x`` where that is a module of the package."""
    path, is_package = MODULES[name]
    here = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in MODULES else base, node.lineno))
    return out


IMPORTS = {name: _imports(name) for name in MODULES}


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _inside(*roots: str) -> list[str]:
    """The modules of the packages ``roots``."""
    return [m for m in MODULES if _under(m, roots)]


def _offenders(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    """``file:line imports X`` for each import of a ``banned`` module (or one below it)."""
    return [f"{MODULES[m][0].relative_to(PACKAGE.parent)}:{line} imports {target}"
            for m in modules for target, line in IMPORTS[m] if _under(target, banned)]


def test_the_package_is_read():
    assert {"pytei_ray.campaign.spec", "pytei_ray.driver.run_job",
            "pytei_ray.execution.ray_executor", "pytei_ray.storage.store"} <= set(MODULES)
    assert "ray" in {t for t, _ in IMPORTS["pytei_ray.execution.ray_executor"]}  # imports seen


def test_only_execution_imports_ray():
    outside = [m for m in MODULES if not _under(m, ("pytei_ray.execution",))]
    assert _offenders(outside, ("ray",)) == []
    assert _offenders(_inside("pytei_ray.execution"), ("ray",)) != []  # the rule can fail


@pytest.mark.parametrize("banned", ["ray", "pyarrow", "pandas"])
def test_the_fault_core_imports_no_ray_pyarrow_or_pandas(banned):
    assert _offenders(_inside(*CORE), (banned,)) == []


def test_campaign_is_data_no_execution_no_storage():
    banned = ("pytei_ray.execution", "pytei_ray.driver", "pytei_ray.storage",
              "pytei_ray.report", "pytei_ray.studies", "ray", "pyarrow")
    assert _offenders(_inside("pytei_ray.campaign"), banned) == []
    module_level_torch = [
        f"{m}:{node.lineno}" for m in MODULES if m.startswith("pytei_ray.campaign")
        for node in ast.parse(MODULES[m][0].read_text()).body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(a.name.split(".")[0] == "torch" for a in node.names)
        or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch"]
    assert module_level_torch == []


def test_the_library_does_not_import_the_studies():
    library = tuple(f"pytei_ray.{p}" for p in ("faults", "injection", "mitigations", "campaign",
                                               "storage", "execution", "driver", "stats",
                                               "report"))
    assert _offenders(_inside(*library), ("pytei_ray.studies",)) == []


def test_the_import_graph_has_no_cycle():
    edges = {m: sorted({t for t, _ in IMPORTS[m] if t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_importing_the_campaign_loads_no_storage_execution_or_ray():
    code = ("import sys, pytei_ray.campaign; loaded = [m for m in ('ray', 'pyarrow', 'pandas', "
            "'pytei_ray.storage', 'pytei_ray.execution', 'pytei_ray.driver') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
