"""The ladder of packages (README, Layout; docs/architecture.md): each imports only those at or below its rung, no
import circle anywhere at any depth, the per-frame core never loads PyTorch, and a bake's orchestration loads
it only when a stage runs. Checked on the source: every import statement, at any depth of the file (inside
functions too), except those under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "stream", "export")
# lowest first; a module may import its own rung and those below it. `export` (offline work: the bake, exports,
# the generation tools) builds on the per-frame packages; the service and the command line sit on top
LADDER = (
    ("engines",),
    ("stream.media",),
    ("stream.perception",),
    ("stream.look",),
    ("stream.casts",),
    ("stream.recasters",),
    ("stream.render",),
    ("export",),
    ("stream.server",),
    ("stream.cli",),
)
# the learned recasters run PyTorch; they sit in stream.recasters, imported only where one is asked for
LEARNED = ("stream.recasters.learned",)
TOP = ("stream.server", "stream.cli")


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
    """(every project module or outside package the file imports, those imported at module level)."""
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
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # not an import at run time
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


def _rung(module: str) -> int | None:
    found = [i for i, rung in enumerate(LADDER) if _inside(module, rung)]
    return max(found) if found else None  # the most specific rung (stream.perception over stream)


def _edges() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, anywhere in the file."""
    return {m: {i for i in IMPORTS[m][0] if i in MODULES and i != m} for m in MODULES}


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_rung() -> None:
    assert not [m for m in MODULES if _rung(m) is None and m not in PACKAGES and m != "stream"]


def test_no_import_circle_anywhere() -> None:
    assert _circles(_edges()) == []


def test_the_circle_finder_finds_one() -> None:
    """The check itself: a circle three modules long, and a chain that is not one."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_each_package_imports_only_its_rung_and_below() -> None:
    upward = {}
    for module in MODULES:
        own = _rung(module)
        if own is None:
            continue
        above = sorted(i for i in IMPORTS[module][0] if i in MODULES and (_rung(i) or 0) > own)
        if above:
            upward[module] = above
    assert not upward, upward


def test_stream_keeps_its_top_for_packages() -> None:
    """A newcomer finds a room by its name: `stream/` holds packages, and at most six modules at its top."""
    top = [p.name for p in (ROOT / "stream").glob("*.py")]
    assert len(top) <= 6, top
    for rung in LADDER[1:]:
        if rung[0].startswith("stream."):
            assert (ROOT / rung[0].replace(".", "/") / "__init__.py").exists(), rung


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
    assert "stream.render.pipeline" in core and "stream.recasters.warp" in core
    assert "stream.perception.mesh_tracker" in core
    bad = {m: sorted(i for i in _loads_at_import(m) if _inside(i, ("torch",))) for m in core}
    assert not {m: v for m, v in bad.items() if v}
    # and no part of it imports the learned recasters, even inside a function: only the top asks for them
    reach = {m: sorted(i for i in IMPORTS[m][0] if _inside(i, LEARNED)) for m in core}
    assert not {m: v for m, v in reach.items() if v}


def test_the_check_sees_imports_at_every_depth() -> None:
    """The parser itself: nested and `from X import module` imports count, TYPE_CHECKING ones do not."""
    anywhere, top = IMPORTS["stream.recasters.learned"]
    assert "torch" in top and "engines.fomm" in top
    anywhere, top = IMPORTS["stream.cli.main"]
    assert "export.engine_bench" in anywhere and "export.engine_bench" not in top


def test_a_bake_loads_pytorch_only_when_a_stage_runs() -> None:
    """The orchestration and its options load no PyTorch, so that a cache hit costs keys and checks only (the
    stage bodies import invert, pti and stitching when they run); tests/test_bake.py checks it in a process."""
    for module in ("export.bake", "export.options", "stream.cli.bake"):
        assert not sorted(i for i in _loads_at_import(module) if _inside(i, ("torch",))), module


def test_the_control_rules_know_nothing_of_webrtc_or_media() -> None:
    """The server's rooms: the control protocol loads no aiortc and no PyAV, and the media tracks know their
    session only through a protocol (no import of the sessions module at run time)."""
    assert not sorted(i for i in _loads_at_import("stream.server.control") if _inside(i, ("aiortc", "av")))
    assert "stream.server.sessions" not in IMPORTS["stream.server.media"][0]
