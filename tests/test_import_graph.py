"""The package's import graph: imports flow downward.

Read from the source with ``ast`` (every ``import`` statement, also those inside
functions), so a lazy import that closes a circle counts as one.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'icmsr')


def _modules():
    mods = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                mods[dotted.removesuffix('.__init__')] = path
    return mods


def _owner(name, mods):
    # 'icmsr.models.lora.LoRARoles' -> 'icmsr.models.lora'
    while name and name not in mods:
        name = name.rpartition('.')[0]
    return name


def _graph():
    mods = _modules()
    edges = {}
    for mod, path in mods.items():
        is_package = path.endswith('__init__.py')
        here = mod if is_package else mod.rpartition('.')[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = here
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition('.')[0]
                    base = f'{anchor}.{base}' if base else anchor
                names = [base] + [f'{base}.{alias.name}' for alias in node.names]
            for name in names:
                owner = _owner(name, mods) if name.startswith('icmsr') else ''
                if owner and owner != mod:
                    targets.add(owner)
        edges[mod] = targets
    return mods, edges


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _own_reexport(component, mods):
    # Allowed: a package's __init__ and its own submodules (the package re-exports them).
    return any(mods[p].endswith('__init__.py')
               and all(m == p or m.startswith(p + '.') for m in component) for p in component)


def test_no_import_circle_beyond_package_reexports():
    mods, edges = _graph()
    assert [c for c in _cycles(edges) if not _own_reexport(c, mods)] == []


def test_registry_is_a_leaf():
    _, edges = _graph()
    assert edges['icmsr.registry'] == set()


@pytest.mark.parametrize('package', ['icmsr.apis', 'icmsr.evaluation'])
def test_readers_sit_below_datasets(package):
    _, edges = _graph()
    reaching = sorted((a, b) for a, targets in edges.items() if a.startswith(package)
                      for b in targets if b.startswith('icmsr.datasets'))
    assert reaching == []


def test_the_check_tells_circles_apart():
    # The check itself can fail: a circle through another package is reported, a package's
    # own re-export circle is not.
    mods = {'p': 'p/__init__.py', 'p.a': 'p/a.py', 'q.b': 'q/b.py'}
    assert _cycles({'p': {'p.a'}, 'p.a': {'q.b'}, 'q.b': {'p'}}) == [['p', 'p.a', 'q.b']]
    assert not _own_reexport(['p', 'p.a', 'q.b'], mods)
    assert _own_reexport(['p', 'p.a'], mods)
