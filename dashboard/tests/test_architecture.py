"""The layers of `continuity` and `dashboard`: no import cycles, no private names across modules,
no import from a lower layer to a higher one.

The import graph is read from the source with `ast` (no imports are executed): every
`import` and `from … import`, at module level or inside functions. `from pkg import sub`
where `sub` is a module is an edge to `pkg.sub`; an edge to a package is an edge to its
`__init__`. Tests and migrations are not sources (they may reach into anything).
"""

import ast
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("continuity", "dashboard")

# Violations that exist today in files another change is rewriting (issue 8: the Redis layer,
# the models and the purge engine). Each entry is exact: the test fails when an entry no longer
# exists, so the list only shrinks. Empty it; never add to it.
# Nothing may be added here: the graph is acyclic and no private name crosses a module.
# (Kept as the place to record a temporary, commented exception, which the tests below
# hold to still being true.)
KNOWN_CYCLE_EDGES = set()
KNOWN_PRIVATE_USES = set()

# The package layers, top first: a module imports from its own layer and those below, never
# from one above. A name stands for that module or package and all below it, `name.*` for all
# below but not the package itself (`dashboard`, which loads the Celery app, is the project's);
# a module is in the layer of the nearest name listed. The records import no continuity.
LAYERS = (
    ("dev tooling", ("dashboard.devtools",)),
    ("project", ("dashboard", "dashboard.settings", "dashboard.urls", "dashboard.celery", "dashboard.wsgi",
                 "dashboard.context_processors", "dashboard.health", "dashboard.monitoring")),
    ("continuity entry points", ("continuity.urls", "continuity.views", "continuity.forms", "continuity.charts",
                                 "continuity.key_links", "continuity.templatetags", "continuity.management",
                                 "continuity.tasks", "continuity.apps", "continuity.metrics")),
    ("continuity jobs", ("continuity.operations", "continuity.store", "continuity.seed")),
    ("continuity models", ("continuity.models",)),
    ("continuity keyspace", ("continuity.keyspace",)),  # the only code that talks to a monitored Redis
    ("continuity rules", ("continuity", "continuity.policy", "continuity.billing", "continuity.keynames",
                          "continuity.humanize", "continuity.crontabs", "continuity.demo")),
    ("records", ("dashboard.*",)),
)


def _module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files(root, packages):
    """{module name: path} of every module of `packages`, tests and migrations included."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            files[_module_name(path, root)] = path
    return files


def _is_source(name):
    parts = name.split(".")
    return not any(part in ("tests", "migrations") or part.startswith("test_") for part in parts)


def _resolve_from(module, is_package, node):
    """The absolute module a `from … import` names (relative imports resolved)."""
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Module:
    """One parsed module: its import edges, the names bound to imported modules, and its
    private-name uses and definitions."""

    def __init__(self, name, path, modules, packages):
        self.name, self.path = name, path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.is_package = path.name == "__init__.py"
        self.edges = set()  # (target module, line)
        self.module_aliases = {}  # local name -> internal module it is bound to
        self.private_imports = []  # (line, module, name)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = self._known_prefix(alias.name, modules)
                    if target:
                        self.edges.add((target, node.lineno))
                        if alias.asname:
                            self.module_aliases[alias.asname] = target
                        else:
                            top = alias.name.split(".")[0]
                            self.module_aliases[top] = top
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(name, self.is_package, node)
                if base is None or base.split(".")[0] not in packages:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        self.edges.add((sub, node.lineno))
                        self.module_aliases[alias.asname or alias.name] = sub
                    elif base in modules:
                        self.edges.add((base, node.lineno))
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            self.private_imports.append((node.lineno, base, alias.name))

    @staticmethod
    def _known_prefix(dotted, modules):
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                return candidate
        return None

    def defined_private_names(self):
        """Private names this module owns: its top-level and class-level names, and any
        `something._name = …` (or setattr with a literal name) it writes."""
        names = set()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and _literal_attr_call(node, ("setattr",)):
                names.add(node.args[1].value)
        return {n for n in names if _private(n)}

    def private_attribute_uses(self):
        """(line, object text, attribute) for every `obj._name` read, and getattr/hasattr
        with a literal private name; `self`/`cls` are the module's own business."""
        uses = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.ctx, ast.Load):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    uses.append((node.lineno, ast.unparse(node.value), node.attr))
            elif isinstance(node, ast.Call) and _literal_attr_call(node, ("getattr", "hasattr")):
                uses.append((node.lineno, ast.unparse(node.args[0]), node.args[1].value))
        return uses


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _literal_attr_call(node, functions):
    return (isinstance(node.func, ast.Name) and node.func.id in functions and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
            and _private(node.args[1].value))


def _parse_all(root=ROOT, packages=PACKAGES):
    files = _source_files(root, packages)
    return {name: Module(name, path, files, packages) for name, path in files.items() if _is_source(name)}


def _graph(parsed):
    graph = defaultdict(set)
    for module in parsed.values():
        for target, _line in module.edges:
            if target != module.name and _is_source(target):
                graph[module.name].add(target)
    return graph


def _cycles(graph):
    """One chain per edge that lies on a cycle (the shortest way back), deduplicated."""
    found = set()
    for start in sorted(graph):
        for nxt in sorted(graph[start]):
            path = _shortest_path(graph, nxt, start)
            if path is None:
                continue
            cycle = [start] + path[:-1]
            turn = cycle.index(min(cycle))
            found.add(tuple(cycle[turn:] + cycle[:turn]))
    return sorted(found)


def _shortest_path(graph, source, target):
    previous, queue = {source: None}, deque([source])
    while queue:
        node = queue.popleft()
        if node == target:
            path = []
            while node is not None:
                path.append(node)
                node = previous[node]
            return path[::-1]
        for nxt in sorted(graph.get(node, ())):
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return None


def _edges_on_cycles(graph):
    return {(a, b) for a in graph for b in graph[a] if _shortest_path(graph, b, a) is not None}


def _private_violations(parsed):
    """(module, name, owner module, line, how) for each private name used outside its module."""
    owners = defaultdict(set)
    for module in parsed.values():
        for name in module.defined_private_names():
            owners[name].add(module.name)
    violations = []
    for module in parsed.values():
        for line, base, name in module.private_imports:
            violations.append((module.name, name, base, line, f"from {base} import {name}"))
        own = module.defined_private_names()
        for line, obj, name in module.private_attribute_uses():
            if obj in module.module_aliases:
                target = module.module_aliases[obj]
                if target != module.name:
                    violations.append((module.name, name, target, line, f"{obj}.{name}"))
            elif name not in own and owners.get(name):
                owner = ", ".join(sorted(owners[name]))
                violations.append((module.name, name, owner, line, f"{obj}.{name}"))
    return violations


def _layer_of(module, layers=LAYERS):
    """(rank, label) of `module`'s layer, rank 0 the top: the nearest name listed for it."""
    ranks = {name: (rank, label) for rank, (label, names) in enumerate(layers) for name in names}
    parts = module.split(".")
    above = [".".join(parts[:end]) + suffix for end in range(len(parts) - 1, 0, -1) for suffix in (".*", "")]
    return next(ranks[name] for name in [module, *above] if name in ranks)


def _back_arrows(parsed, layers=LAYERS):
    """(module, line, target, its layer, the target's) for each import from a higher layer."""
    arrows = []
    for module in parsed.values():
        (rank, label), edges = _layer_of(module.name, layers), [e for e in module.edges if _is_source(e[0])]
        arrows += [(module.name, line, target, label, _layer_of(target, layers)[1]) for target, line in edges
                   if _layer_of(target, layers)[0] < rank]
    return sorted(arrows)


def _write(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_it_reads_every_import_including_those_inside_functions():
    parsed = _parse_all()
    alerting = {target for target, _ in parsed["continuity.operations.alerting"].edges}
    # `from continuity.models import ReviewRun` sits inside a function there.
    assert "continuity.models" in alerting and "dashboard.alerts" in alerting
    assert "continuity.tests.test_review" not in parsed and "dashboard.migrations" not in str(sorted(parsed))


def test_it_reports_cycles_as_chains_and_private_names_across_modules(tmp_path):
    files = {
        "app/__init__.py": "",
        "app/a.py": "from app import b\n",
        "app/b.py": "def f():\n    from app.c import run\n",
        "app/c.py": "import app.a\n_cache = {}\ndef run(client):\n    client._token = 1\n",
        "app/d.py": "from app import c\nfrom app.c import _cache\ndef g(client):\n    return c._cache, client._token\n",
        "app/tests/test_x.py": "from app.c import _cache\n",
    }
    _write(tmp_path, files)
    parsed = _parse_all(tmp_path, ("app",))
    assert "app.tests.test_x" not in parsed
    assert _cycles(_graph(parsed)) == [("app.a", "app.b", "app.c")]
    found = sorted((module, how, owner) for module, _name, owner, _line, how in _private_violations(parsed))
    assert found == [("app.d", "c._cache", "app.c"), ("app.d", "client._token", "app.c"),
                     ("app.d", "from app.c import _cache", "app.c")]


def test_the_import_graph_has_no_cycles():
    graph = _graph(_parse_all())
    for edge in KNOWN_CYCLE_EDGES:
        graph[edge[0]].discard(edge[1])
    cycles = _cycles(graph)
    assert not cycles, "Import cycles:\n" + "\n".join("  " + " -> ".join(c + (c[0],)) for c in cycles)


def test_every_known_cycle_edge_still_exists_and_is_on_a_cycle():
    on_cycles = _edges_on_cycles(_graph(_parse_all()))
    stale = sorted(KNOWN_CYCLE_EDGES - on_cycles)
    assert not stale, ("No longer on an import cycle; remove from KNOWN_CYCLE_EDGES:\n"
                       + "\n".join(f"  {a} -> {b}" for a, b in stale))


def test_no_module_uses_another_modules_private_names():
    violations = _private_violations(_parse_all())
    unknown = [v for v in violations if v[:3] not in KNOWN_PRIVATE_USES]
    assert not unknown, "Private names used outside their module:\n" + "\n".join(
        f"  {module}:{line} uses {how} (private to {owner})" for module, name, owner, line, how in unknown)
    stale = sorted(KNOWN_PRIVATE_USES - {v[:3] for v in violations})
    assert not stale, "No longer found; remove from KNOWN_PRIVATE_USES:\n" + "\n".join(f"  {s}" for s in stale)


def test_it_reports_imports_from_a_lower_layer_to_a_higher_one(tmp_path):
    _write(tmp_path, {"app/__init__.py": "from app import wiring\n", "app/wiring.py": "from app.core import rules\n",
                      "app/core/__init__.py": "", "app/core/rules.py": "def f():\n    from app.jobs import run\n",
                      "app/jobs.py": "from app.core import rules\nimport app.wiring\n", "app/records.py": "import app\n"})
    layers = (("wiring", ("app", "app.wiring")), ("jobs", ("app.jobs",)), ("core", ("app.core",)),
              ("records", ("app.*",)))
    parsed = _parse_all(tmp_path, ("app",))
    assert [_layer_of(name, layers)[1] for name in sorted(parsed)] == [
        "wiring", "core", "core", "jobs", "records", "wiring"]
    assert _back_arrows(parsed, layers) == [
        ("app.core.rules", 2, "app.jobs", "core", "jobs"),  # inside a function too
        ("app.jobs", 2, "app.wiring", "jobs", "wiring"),
        ("app.records", 1, "app", "records", "wiring"),
    ]


def test_no_module_imports_from_a_higher_layer():
    arrows = _back_arrows(_parse_all())
    assert not arrows, "Imports from a lower layer to a higher one:\n" + "\n".join(
        f"  {module}:{line} imports {target} ({label} -> {target_label})"
        for module, line, target, label, target_label in arrows)
