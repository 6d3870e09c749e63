"""The house's rules, read off the source with ast: dependencies run one way (the torch-free
foundation nada_core <- the method nada_train <- the export nada_export <- the serving nada_serve; the
built-in world beside them, standing on the method; nada on top, importing the rest lazily), no import
circles, and the client side needs no torch."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nada", "nada_core", "nada_train", "nada_export", "nada_serve", "nada_world")
# the packages each one may import: every dependency points down this table
STANDS_ON = {
    "nada_core": set(),
    "nada_train": {"nada_core"},
    "nada_export": {"nada_core", "nada_train"},
    "nada_serve": {"nada_core", "nada_train", "nada_export"},
    "nada_world": {"nada_core", "nada_train"},
    "nada": {"nada_core"},  # and the others by name, on first use (nada.__getattr__)
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def project_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in files} for m, p in files.items()}


def wrong_way_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each module's imports of a package it does not stand on."""
    found = {
        m: sorted(d for d in deps if d.split(".")[0] not in STANDS_ON[m.split(".")[0]] | {m.split(".")[0]})
        for m, deps in graph.items()
    }
    return {m: d for m, d in found.items() if d}


def test_dependencies_run_one_way():
    assert wrong_way_imports(project_graph()) == {}


def test_the_public_names_of_nada_are_the_libraries_objects():
    """Every lazy name of `import nada` resolves to the object its module defines."""
    import importlib

    import nada

    for name, (module, attribute) in nada._NAMES.items():
        assert getattr(nada, name) is getattr(importlib.import_module(module), attribute), name
    with pytest.raises(AttributeError, match="has no attribute 'train'"):
        nada.train  # noqa: B018


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search: every back edge closes a circle."""
    state, circles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                circles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return circles


def test_no_import_circles():
    assert import_circles(project_graph()) == []


def test_the_checks_see_a_planted_circle(tmp_path, monkeypatch):
    """The circle the world once made (trainer imports world.run inside a function, world.run imports
    the trainer) is found by both checks above."""
    a = tmp_path / "nada_train" / "a.py"
    a.parent.mkdir()
    a.write_text("def f():\n    from nada_world.b import g\n")
    b = tmp_path / "nada_world" / "b.py"
    b.parent.mkdir()
    b.write_text("from nada_train.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = project_graph()
    assert graph == {"nada_train.a": {"nada_world.b"}, "nada_world.b": {"nada_train.a"}}
    assert import_circles(graph) == [["nada_train.a", "nada_world.b", "nada_train.a"]]
    assert wrong_way_imports(graph) == {"nada_train.a": ["nada_world.b"]}
    with pytest.raises(AssertionError):
        test_dependencies_run_one_way()


CLIENT_SIDE = (
    "nada",
    "nada_core",
    "nada_serve.client",
    "nada_serve.cli.client",
    "nada_core.seeds",
    "nada_core.pngs",
    "nada_core.cli",
    "nada_core.entry_points",
    "nada_core.errors",
    "nada_core.fileio",
)


def test_client_side_imports_no_torch_stack():
    """What nada-client imports, followed through the project's modules: no torch, open_clip, onnx."""
    graph = project_graph()
    seen, todo = set(), ["nada", "nada_serve.cli.client", "nada_core.entry_points"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [d for d in graph.get(m, ()) if d in graph]
    assert seen <= set(CLIENT_SIDE) | {"nada_train", "nada_serve", "nada_train.cli", "nada_serve.cli"}, (
        sorted(seen)
    )
    heavy = {"torch", "torchvision", "open_clip", "onnx", "onnxruntime", "safetensors"}
    for m in seen:
        path = ROOT / (m.replace(".", "/") + ".py")
        path = path if path.exists() else ROOT / m.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not top & heavy, (m, top & heavy)


def test_import_nada_needs_no_torch_and_says_what_a_name_needs():
    """On a client machine (torch, open_clip, onnxruntime impossible to import) `import nada` works and
    nada.Client is there; nada.adapt fails with the ImportError of what it needs."""
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = sys.modules['open_clip'] = sys.modules['onnxruntime'] = None\n"
        "import nada\n"
        "assert nada.Client.__name__ == 'GeneratorClient' and nada.__version__\n"
        "try:\n    nada.adapt\nexcept ImportError as e:\n    print('needs', e.name)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "needs torch"


def test_client_extra_brings_no_torch():
    """pip install 'nada[client]': the base requirements plus the client extra name no torch stack."""
    import re
    from importlib.metadata import requires

    reqs = requires("nada")
    chosen = [r for r in reqs if "extra ==" not in r or re.search(r'extra == "client"', r)]
    names = {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in chosen}
    assert "tritonclient" in names and "numpy" in names and "pillow" in names
    assert not names & {
        "torch",
        "torchvision",
        "open-clip-torch",
        "open_clip_torch",
        "onnx",
        "onnxruntime",
        "nvidia-pytriton",
    }
