"""The browser client's layout (web/static/js): lib/ has no DOM, ui/ holds the views, and no import cycle.

Reads the sources only (no node needed): comments and string literals are blanked out, then `document`/`window`
are looked for in lib/, and the `import … from`, `export … from` and `import("…")` edges are followed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "web" / "static" / "js"

# One pass over the source: comments, string and template literals, regular expressions are matched in order, so
# a quote inside a comment (or a slash inside a string) is not taken for the start of something else.
_TOKEN = re.compile(
    r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`"""
    r"""|(?<=[=(,:;!&|?{}\[\n])\s*/(?![/*])(?:\\.|\[(?:\\.|[^\]\\\n])*\]|[^/\\\n\[])+/[a-z]*""",
    re.S,
)
_IMPORT = re.compile(
    r"""(?:^|[;\n}])\s*(?:import|export)\b[^;'"`]*?\bfrom\s*(["'])(?P<a>[^"']+)\1"""
    r"""|(?:^|[;\n}])\s*import\s*(["'])(?P<b>[^"']+)\3"""
    r"""|\bimport\s*\(\s*(["'])(?P<c>[^"']+)\5\s*\)""",
)


def _code(text: str, keep_strings: bool = False) -> str:
    """The source with comments (and, unless keep_strings, literals) replaced by spaces; newlines kept."""

    def blank(m: re.Match[str]) -> str:
        tok = m.group(0)
        if keep_strings and tok[:1] in "\"'":
            return tok
        return re.sub(r"[^\n]", " ", tok)

    return _TOKEN.sub(blank, text)


def _modules() -> list[Path]:
    return sorted(JS.rglob("*.js"))


def _imports(path: Path) -> list[Path]:
    out = []
    for m in _IMPORT.finditer(_code(path.read_text(encoding="utf-8"), keep_strings=True)):
        spec = m.group("a") or m.group("b") or m.group("c")
        assert spec.startswith("./") or spec.startswith("../"), f"{path.relative_to(JS)}: non-relative import {spec}"
        out.append((path.parent / spec).resolve())
    return out


def _graph() -> dict[Path, list[Path]]:
    return {p.resolve(): _imports(p) for p in _modules()}


def test_the_layout_is_there():
    names = {p.relative_to(JS).as_posix() for p in _modules()}
    for expected in ("lib/protocol.js", "lib/e2ee-flow.js", "lib/e2ee-worker.js", "lib/i18n.js", "i18n/en.js",
                     "ui/dom.js", "ui/session.js", "ui/join.js"):
        assert expected in names
    assert not [n for n in names if "/" not in n], "every module lives in lib/, ui/ or i18n/"


@pytest.mark.parametrize("path", [p for p in _modules() if p.parent.name in ("lib", "i18n")],
                         ids=lambda p: p.relative_to(JS).as_posix())
def test_lib_has_no_dom(path: Path):
    code = _code(path.read_text(encoding="utf-8"))
    hits = [(code.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"(?<![\w$.])(document|window)(?![\w$])", code)]
    assert not hits, f"{path.relative_to(JS)} uses the DOM (line, name): {hits}; DOM code belongs in ui/"


def test_imports_resolve_and_go_down():
    for src, deps in _graph().items():
        for dep in deps:
            assert dep.is_file(), f"{src.relative_to(JS)} imports a missing module {dep}"
            if src.parent.name in ("lib", "i18n"):
                assert dep.parent.name in ("lib", "i18n"), f"{src.relative_to(JS)} (library) imports the view {dep.relative_to(JS)}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[Path, int] = {}  # 1 = on the current path, 2 = done
    stack: list[Path] = []

    def visit(node: Path) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                pytest.fail("import cycle: " + " -> ".join(p.relative_to(JS).as_posix() for p in cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_the_checker_sees_what_it_must():
    """The scanner itself: a DOM use in code is found, one in a comment or string is not; cycles are edges."""
    src = 'import { a } from "./a.js";\n// window\nconst s = "document";\nexport { b } from \'../b.js\';\n' \
          'const m = await import("./c.js");\nconst r = /"/; document.title = s;\n'
    code = _code(src)
    assert [m.group(1) for m in re.finditer(r"(?<![\w$.])(document|window)(?![\w$])", code)] == ["document"]
    specs = [m.group("a") or m.group("b") or m.group("c") for m in _IMPORT.finditer(_code(src, keep_strings=True))]
    assert specs == ["./a.js", "../b.js", "./c.js"]
