"""The package reads as its data flow: imports only go down the layers, and never in a circle.

Layers, lowest first. A module may import from its own layer or any lower one; an
import that runs up a layer fails this test, as does any cycle between modules
(imports inside functions and under ``TYPE_CHECKING`` count too).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "lensgen"

LAYERS = (
    ("lensgen", "lensgen.errors", "lensgen.exports"),  # version, error types, lazy exports
    ("lensgen.config", "lensgen.distributions", "lensgen.io", "lensgen.devices"),  # settings,
    # files, Ctrl-C, the local device mesh
    ("lensgen.lensing",),  # physics: mass, light, ray-tracing, instrument, rendering
    ("lensgen.plots",),  # figures of lensing quantities
    ("lensgen.source",),  # the learned source: VAE, flow, training
    ("lensgen.data",),  # GREAT3 download and the stamp dataset build
    ("lensgen.simulate",),  # the simulate workflow and its scene config
    ("lensgen.infer",),  # inference workflows
    ("lensgen.cli", "lensgen.__main__"),  # the command line
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every lensgen module ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name == "lensgen" or name.startswith("lensgen.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # "from lensgen.x import y" names module lensgen.x.y only when that is a module.
    return {
        name: {m for m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "lensgen" and module.startswith(prefix + ".")):
                best = i
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in graph():
        layer(module)


def test_no_import_runs_up_a_layer():
    upward = sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in graph().items()
        for b in targets
        if layer(b) > layer(a)
    )
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test itself can fail: a physics module importing a workflow is caught."""
    assert layer("lensgen.lensing.mass") < layer("lensgen.simulate.scene")
    assert layer("lensgen.infer.run") > layer("lensgen.source.vae")
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from lensgen.infer.run import run_infer\n")
    assert imports(src) == {"lensgen.infer.run", "lensgen.infer.run.run_infer"}


def test_no_module_imports_another_modules_private_names():
    """Private names stay in their module; a package may share a private ``_module``."""
    crossing = []
    for path in PACKAGE.rglob("*.py"):
        here = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("lensgen")
            ):
                private_module = node.module.rsplit(".", 1)[-1].startswith("_")
                same_package = node.module.rsplit(".", 1)[0] == here.rsplit(".", 1)[0]
                for alias in node.names:
                    if alias.name.startswith("_") and alias.name != "__version__":
                        crossing.append(f"{here}: {node.module}.{alias.name}")
                if private_module and not same_package:
                    crossing.append(f"{here}: {node.module}")
    assert not crossing, crossing


def test_package_exports_resolve():
    """Every name in a package's ``__all__`` exists (the public surface is real)."""
    import importlib

    for init in PACKAGE.rglob("__init__.py"):
        package = importlib.import_module(module_name(init))
        for name in getattr(package, "__all__", ()):
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
