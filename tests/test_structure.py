"""The book's structure (issue 28): chapters in the order they build on each other, and no import circle.

A chapter is a notebook in `nbs/`, ordered by its file name; the module it exports is named by its `#| default_exp`.
Every `multiclust` import a chapter makes (in any cell, exported or not) must name a module of an earlier chapter or
its own, and the exported library's module graph (imports inside functions included) must have no cycle.
"""
import ast, json, re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'nbs'
LIB = REPO / 'multiclust'


def _chapters() -> list[tuple[str, str | None, str]]:
    "(notebook stem, exported module or None, the code of every code cell) in reading order; `index` is the front page."
    out = []
    for p in sorted(NBS.glob('[0-9]*.ipynb')):
        cells = [''.join(c['source']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code']
        exp = next((m.group(1) for s in cells for m in [re.search(r'^#\|\s*default_exp\s+(\S+)', s, re.M)] if m), None)
        out.append((p.stem, exp, '\n'.join(cells)))
    return out


def _imported_modules(code: str, package_modules: set[str], relative_ok: bool = False) -> set[str]:
    "The `multiclust` modules `code` imports; `from multiclust import X` names the package itself unless X is a module."
    code = '\n'.join(l for l in code.splitlines() if not l.lstrip().startswith(('%', '!')))   # cell magics are not Python
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == 'multiclust': found.add('__init__')
                elif a.name.startswith('multiclust.'): found.add(a.name.split('.')[1])
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level and relative_ok:                       # `from .clip import ...` inside the package
                if mod: found.add(mod.split('.')[0])
                else: found |= {a.name for a in node.names}
            elif mod == 'multiclust':
                found |= {a.name if a.name in package_modules else '__init__' for a in node.names}
            elif mod.startswith('multiclust.'):
                found.add(mod.split('.')[1])
    return found


def _library_graph() -> dict[str, set[str]]:
    mods = {p.stem for p in LIB.glob('*.py')} - {'_modidx'}
    return {m: _imported_modules((LIB / f'{m}.py').read_text(), mods, relative_ok=True) - {m} for m in mods}


def test_every_module_has_one_chapter():
    exported = [e for _, e, _ in _chapters() if e]
    assert len(exported) == len(set(exported)), f"a module is exported by two chapters: {sorted(exported)}"
    missing = {m for m in _library_graph() if m not in exported}
    assert not missing, f"modules in multiclust/ that no chapter exports: {sorted(missing)}"


def test_chapters_import_only_earlier_chapters():
    chapters = _chapters()
    mods = {e for _, e, _ in chapters if e}
    where = {e: i for i, (_, e, _) in enumerate(chapters) if e}
    bad = []
    for i, (stem, exp, code) in enumerate(chapters):
        for m in sorted(_imported_modules(code, mods)):
            if m not in where: bad.append(f"{stem} imports multiclust.{m}, which no chapter exports")
            elif where[m] > i: bad.append(f"{stem} imports multiclust.{m} from the later chapter {chapters[where[m]][0]}")
    assert not bad, '\n'.join(bad)


def test_library_modules_import_only_earlier_chapters():
    "The exported code alone (what `import multiclust` runs), imports inside functions included."
    chapters = _chapters()
    where = {e: i for i, (_, e, _) in enumerate(chapters) if e}
    bad = [f"multiclust/{m}.py ({chapters[where[m]][0]}) imports {d} ({chapters[where[d]][0]})"
           for m, deps in _library_graph().items() for d in sorted(deps) if where.get(d, -1) > where[m]]
    assert not bad, '\n'.join(bad)


def test_no_import_circle():
    graph = _library_graph()
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open': pytest.fail("import circle: " + ' -> '.join(stack[stack.index(d):] + [d]))
            if d not in state: visit(d)
        state[m] = 'done'; stack.pop()
    for m in sorted(graph):
        if m not in state: visit(m)


def test_the_checks_see_a_violation():
    "The import reader itself: a later chapter's module, a lazy import and `from multiclust import` are all seen."
    mods = {'clip', 'cluster'}
    code = "import os\ndef f():\n    from multiclust.cluster import cluster\nfrom multiclust import clip, METHODS\n%time x = 1"
    assert _imported_modules(code, mods) == {'cluster', 'clip', '__init__'}
    assert _imported_modules("from .clip import Encoder\nfrom . import data", mods, relative_ok=True) == {'clip', 'data'}
