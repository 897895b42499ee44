"""pinid's own imports: no circle, and no lower layer importing an upper one.

Every ``import`` and ``from ... import`` in pinid is read with ``ast`` (at
module level and inside functions, absolute and relative, ``TYPE_CHECKING``
ones too: a type an upper layer owns is still a dependency on it). Layers,
low to high::

    errors _version tables images phash _atomic results
    catalogue
    encoder local
    identify
    index
    dedup evaluation        (and pinid/__init__.py, the public facade)
    serve                   (the HTTP service: `pinid serve` starts it)
    cli

A unit is a top-level module or subpackage of pinid. A unit may import its
own layer and the layers below; ``synth`` (the benchmark's photo simulator)
imports nothing of pinid but itself, and only ``evaluation`` (self-calibration
simulates photos) and ``cli`` import it; nothing imports the facade ``pinid`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pinid

PACKAGE = "pinid"
ROOT = Path(pinid.__file__).resolve().parent
FACADE = "__init__"
LAYERS: list[set[str]] = [
    {"errors", "_version", "tables", "images", "phash", "_atomic", "results"},
    {"catalogue"},
    {"encoder", "local"},
    {"identify"},
    {"index"},
    {"dedup", "evaluation", FACADE},
    {"serve", "cluster"},  # cluster: builds and dedup on Ray, above index and dedup, beside the service
    {"cli"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
ISOLATED = {"synth": {"evaluation", "cli"}}  # imports nothing of pinid but itself; only these units import it


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    """``pinid/index/build.py`` -> ``pinid.index.build``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imports_of(module: str, source: str, is_package: bool, modules: set[str] | None = None,
               package: str = PACKAGE) -> set[str]:
    """Every module of ``package`` that ``source`` imports, anywhere in it, relative imports resolved.

    ``from a.b import c`` imports the module ``a.b.c`` where that exists (given
    ``modules``), else the name ``c`` from ``a.b``, which needs ``a.b`` itself.
    Without ``modules`` both are listed.
    """
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            found.update(submodules if modules is None else submodules & modules)
            if modules is None or submodules - modules:
                found.add(target)
    return {name for name in found if name == package or name.startswith(package + ".")}


def read_import_map(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the pinid modules it imports."""
    sources = {module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for module, path in sources.items():
        named = imports_of(module, path.read_text(encoding="utf-8"), path.name == "__init__.py", set(sources),
                           package)
        graph[module] = {name for name in named if name in sources and name != module}
    return graph


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def with_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``pinid.a.b`` from outside ``pinid.a`` first runs ``pinid.a``'s ``__init__``: add that edge.

    The root package is left out: it runs first for every module, whatever it imports.
    """
    full = {module: set(targets) for module, targets in graph.items()}
    for module, targets in graph.items():
        for target in targets:
            parts = target.split(".")
            for end in range(2, len(parts)):
                parent = ".".join(parts[:end])
                if parent in graph and module != parent and not module.startswith(parent + "."):
                    full[module].add(parent)
    return full


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (as a closed path) per strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph.get(node, ()):
                    groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A readable circle inside one strongly connected group: a -> b -> ... -> a."""
    members = set(group)
    path = [group[0]]
    while True:
        step = min(target for target in graph[path[-1]] if target in members)
        if step in path:
            return path[path.index(step):] + [step]
        path.append(step)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import of an upper layer by a lower one, of the facade, or of pinid by an isolated unit."""
    problems = []
    for module, targets in sorted(graph.items()):
        unit = unit_of(module)
        for target in sorted(targets):
            other = unit_of(target)
            if other == unit:
                continue
            if unit in ISOLATED:
                problems.append(f"{module} imports {target}: {unit} imports nothing of pinid but itself")
            elif other in ISOLATED:
                if unit not in ISOLATED[other]:
                    problems.append(f"{module} imports {target}: only {', '.join(sorted(ISOLATED[other]))} "
                                    f"may import {other}")
            elif other == FACADE:
                problems.append(f"{module} imports the facade {target}: import the module that defines it")
            elif unit not in LEVEL or other not in LEVEL:
                problems.append(f"{module} imports {target}: {unit if unit not in LEVEL else other} has no layer "
                                "(add it to LAYERS in tests/test_layers.py)")
            elif LEVEL[other] > LEVEL[unit]:
                problems.append(f"{module} (layer {LEVEL[unit]}, {unit}) imports {target} "
                                f"(layer {LEVEL[other]}, {other}): a lower layer imports an upper one")
    return problems


# ------------------------------------------------------------------ the tests
def test_pinid_has_no_import_circle() -> None:
    circles = find_circles(with_parent_packages(read_import_map()))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_no_lower_layer_imports_an_upper_one() -> None:
    problems = layer_violations(read_import_map())
    assert not problems, "\n".join(problems)


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module) for module in read_import_map()}
    assert units - LEVEL.keys() - ISOLATED.keys() == set()


def test_the_import_map_sees_function_level_relative_and_absolute_imports() -> None:
    graph = read_import_map()
    # pinid.cli imports its commands' machinery inside the functions, relatively
    assert {"pinid.index", "pinid.evaluation.run", "pinid.errors"} <= graph["pinid.cli"]
    source = ("import os\nimport pinid.tables\nfrom .. import errors\nfrom ..index import PinIndex\n"
              "def later():\n    from .metrics import compute_metrics\n    from . import report\n")
    found = imports_of("pinid.evaluation.run", source, is_package=False)
    assert {"pinid.tables", "pinid.errors", "pinid.index", "pinid.index.PinIndex", "pinid.evaluation.metrics",
            "pinid.evaluation.report"} <= found
    assert imports_of("pinid.index", "from .build import x\n", is_package=True) >= {"pinid.index.build"}
    # a submodule imported from its package needs the submodule only; a name from it needs the package
    modules = {"pinid.synth", "pinid.synth.props", "pinid.synth.scenes"}
    assert imports_of("pinid.synth.scenes", "from . import props\n", False, modules) == {"pinid.synth.props"}
    assert imports_of("pinid.synth.scenes", "from . import generate\n", False, modules) == {"pinid.synth"}


def test_a_circle_would_be_caught() -> None:
    fake = {"pinid.index.pin_index": {"pinid.identify.recogniser"},
            "pinid.identify.recogniser": {"pinid.results"},
            "pinid.results": {"pinid.index.pin_index"},
            "pinid.errors": set()}
    assert find_circles(fake) == [["pinid.identify.recogniser", "pinid.results", "pinid.index.pin_index",
                                   "pinid.identify.recogniser"]]
    assert find_circles({"pinid.a": {"pinid.a"}}) == [["pinid.a", "pinid.a"]]
    assert find_circles({"pinid.a": {"pinid.b"}, "pinid.b": set()}) == []


def test_a_circle_through_a_package_init_would_be_caught() -> None:
    # pinid.identify.recogniser imports pinid.index.search; pinid.index/__init__ runs first and imports
    # pin_index, which imports the recogniser: a circle no single import line shows
    fake = {"pinid.index": {"pinid.index.pin_index"},
            "pinid.index.pin_index": {"pinid.identify.recogniser"},
            "pinid.index.search": set(),
            "pinid.identify": set(),
            "pinid.identify.recogniser": {"pinid.index.search"}}
    assert find_circles(fake) == []
    assert find_circles(with_parent_packages(fake))


@pytest.mark.parametrize("module, target", [
    ("pinid.local.vote", "pinid.index.format"),          # identification core reaching up
    ("pinid.identify.recogniser", "pinid.dedup.graph"),
    ("pinid.index.build", "pinid.evaluation.run"),
    ("pinid.errors", "pinid.catalogue"),
    ("pinid.synth.photo", "pinid.images"),               # synth imports nothing of pinid
    ("pinid.synth.reference", "pinid.local.features"),
    ("pinid.index.build", "pinid.synth.scenes"),         # only evaluation and cli import synth
    ("pinid.local.features", "pinid.synth.reference"),
    ("pinid.evaluation.run", "pinid"),                   # nothing imports the facade
])
def test_a_layer_violation_would_be_caught(module: str, target: str) -> None:
    assert len(layer_violations({module: {target}})) == 1


def test_allowed_imports_are_not_reported() -> None:
    assert layer_violations({"pinid.cli": {"pinid.index", "pinid.dedup.group", "pinid.errors", "pinid.synth"},
                             "pinid.index.build": {"pinid.local.features", "pinid.index.format"},
                             "pinid.synth.photo": {"pinid.synth.enamel"},
                             "pinid.evaluation.simulate": {"pinid.synth.scenes", "pinid.synth.reference",
                                                           "pinid.local.features"},
                             "pinid": {"pinid.index"}}) == []
