"""The house rules of docs/architecture.md that a machine can check: no import circles, models/ without Spark,
lake/ importing nothing above it.

Read from the source (``ast``), so the check costs no imports: every ``import`` of one of our
modules counts, at the top of a module or inside a function.
"""

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"


def _modules() -> dict[str, Path]:
    out = {}
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], top_only: bool = False) -> set[str]:
    """What ``name`` imports: our modules by name, others by their top package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for imported in names:
            found.add(imported if imported in modules else imported.split(".")[0])
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {name: {m for m in _imports(name, path, modules) if m in modules and m != name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_models_never_load_spark_when_imported():
    """models/ is pure logic: importing any of its modules (and what they import at the top) brings no pyspark."""
    modules = _modules()
    top = {name: _imports(name, path, modules, top_only=True) for name, path in modules.items()}
    for name in (m for m in modules if m.startswith("interestlake.models")):
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo += [m for m in top.get(current, ()) if m in modules]
        brought = {external for module in seen for external in top[module] if external not in modules}
        assert "pyspark" not in brought, f"{name} imports pyspark at the top (through {sorted(seen)})"


# The layers above lake/ (docs/architecture.md): the lake layer depends on nothing above it.
ABOVE_LAKE = ("datasets", "pipeline", "models", "evaluation", "benchmarks", "cli")


def _reaches_above(imported: set[str]) -> list[str]:
    """The modules among ``imported`` that lie above the lake layer."""
    return sorted(
        m for m in imported if any(m == f"interestlake.{up}" or m.startswith(f"interestlake.{up}.") for up in ABOVE_LAKE)
    )


def test_lake_imports_nothing_above_it():
    """No module under lake/ imports datasets/, pipeline/, models/, evaluation/, benchmarks/ or cli, even inside a function."""
    modules = _modules()
    wrong = {
        name: above
        for name, path in modules.items()
        if name == "interestlake.lake" or name.startswith("interestlake.lake.")
        if (above := _reaches_above(_imports(name, path, modules)))
    }
    assert wrong == {}


def test_the_lake_rule_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "query.py"
    module.write_text("def run():\n    from interestlake.pipeline.refresh import open_pipeline\n", encoding="utf-8")
    modules = {"interestlake.lake.query": module, "interestlake.pipeline.refresh": module}
    found = _imports("interestlake.lake.query", module, modules)
    assert _reaches_above(found) == ["interestlake.pipeline.refresh"]


def test_the_lake_package_re_exports_the_names_of_lake_tables():
    """``interestlake.lake`` loads the names of ``lake/tables.py`` lazily, from a list of its own: the same list."""

    def names(path: Path, variable: str) -> list[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        value = next(node.value for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == variable)
        return sorted(ast.literal_eval(value))

    lake = LIB / "interestlake" / "lake"
    assert names(lake / "__init__.py", "_FROM_TABLES") == names(lake / "tables.py", "__all__")
