"""The layers run one way (README, Architecture): `engines` (models, loading, runtimes, the cache's mechanics)
imports nothing of `stream` or `export`; `stream` imports nothing of `export`, and its per-frame core never
loads PyTorch, not even through what it imports; `export` builds on both; only the command line and the service
(the top) import everything. Checked on the source: every import statement, at any depth of the file."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "stream", "export")
# the top: the command line, its tools and the service, which may import every layer
TOP = ("stream.cli", "stream.bake_cli", "stream.engine_cli", "stream.tools", "stream.server")
# the learned recasters run PyTorch; they sit in stream, imported only where one is asked for
LEARNED = ("stream.recasters.learned",)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module the file imports, those imported at module level), as absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    anywhere: set[str] = set()
    top: set[str] = set()

    def add(name: str, level: bool) -> None:
        anywhere.add(name)
        if level:
            top.add(name)

    def visit(node: ast.AST, level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            # `if TYPE_CHECKING:` blocks are not imports at run time
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, level)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                add(child.module, level)
                for alias in child.names:  # `from engines import fomm` imports the module engines.fomm
                    if f"{child.module}.{alias.name}" in MODULES:
                        add(f"{child.module}.{alias.name}", level)
            visit(child, nested if not isinstance(child, ast.ClassDef) else level)

    visit(tree, True)
    return anywhere, top


IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_engines_import_nothing_of_stream_or_export() -> None:
    bad = {m: sorted(i for i in IMPORTS[m][0] if _inside(i, ("stream", "export")))
           for m in MODULES if _inside(m, ("engines",))}
    assert not {m: v for m, v in bad.items() if v}


def test_stream_imports_nothing_of_export_below_the_top() -> None:
    bad = {m: sorted(i for i in IMPORTS[m][0] if _inside(i, ("export",)))
           for m in MODULES if _inside(m, ("stream",)) and not _inside(m, TOP)}
    assert not {m: v for m, v in bad.items() if v}


def test_export_does_not_reach_up_to_the_command_line_or_the_service() -> None:
    bad = {m: sorted(i for i in IMPORTS[m][0] if _inside(i, TOP)) for m in MODULES if _inside(m, ("export",))}
    assert not {m: v for m, v in bad.items() if v}


def _loads_at_import(module: str, seen: set[str] | None = None) -> set[str]:
    """Everything importing ``module`` loads: its module-level imports, followed through the project's modules."""
    seen = set() if seen is None else seen
    if module in seen or module not in MODULES:
        return set()
    seen.add(module)
    out = set(IMPORTS[module][1])
    for name in list(out):
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
            out |= _loads_at_import(".".join(parts[:k]), seen)
    return out


def test_the_per_frame_core_never_loads_torch() -> None:
    core = [m for m in MODULES if _inside(m, ("stream",)) and not _inside(m, TOP + LEARNED)]
    assert "stream.pipeline" in core and "stream.recasters" in core and "stream.tracking" in core
    bad = {m: sorted(i for i in _loads_at_import(m) if _inside(i, ("torch",))) for m in core}
    assert not {m: v for m, v in bad.items() if v}
    # and no part of it imports the learned recasters, even inside a function: only the top asks for them
    reach = {m: sorted(i for i in IMPORTS[m][0] if _inside(i, LEARNED)) for m in core}
    assert not {m: v for m, v in reach.items() if v}


def test_the_check_sees_imports_at_every_depth() -> None:
    """The parser itself: nested and `from X import module` imports count, TYPE_CHECKING ones do not."""
    anywhere, top = IMPORTS["stream.recasters.learned"]
    assert "torch" in top and "engines.fomm" in top
    anywhere, top = IMPORTS["stream.cli"]
    assert "export.engine_bench" in anywhere and "export.engine_bench" not in top


def test_a_bake_loads_pytorch_only_when_a_stage_runs() -> None:
    """The orchestration and its options load no PyTorch, so that a cache hit costs keys and checks only (the
    stage bodies import invert, pti and stitching when they run); tests/test_bake.py checks it in a process."""
    for module in ("export.bake", "export.options", "stream.bake_cli"):
        assert not sorted(i for i in _loads_at_import(module) if _inside(i, ("torch",))), module


def test_the_control_rules_know_nothing_of_webrtc_or_media() -> None:
    """The server's rooms: the control protocol loads no aiortc and no PyAV, and the media tracks know their
    session only through a protocol (no import of the sessions module at run time)."""
    assert not sorted(i for i in _loads_at_import("stream.server.control") if _inside(i, ("aiortc", "av")))
    assert "stream.server.sessions" not in IMPORTS["stream.server.media"][0]
