"""The house's rules, read off the source with ast: dependencies run one way (the built-in world
uses the method, never the reverse), no import circles, and the client side needs no torch."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nada_train", "nada_export", "nada_serve", "nada_world")


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


def test_method_and_export_never_import_the_world():
    offenders = {m: sorted(i for i in deps if i.startswith("nada_world"))
                 for m, deps in project_graph().items() if m.startswith(("nada_train", "nada_export", "nada_serve"))}
    assert {m: i for m, i in offenders.items() if i} == {}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search: every back edge closes a circle."""
    state, circles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                circles.append(stack[stack.index(d):] + [d])
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
    with pytest.raises(AssertionError):
        test_method_and_export_never_import_the_world()


CLIENT_SIDE = ("nada_serve.client", "nada_serve.cli.client", "nada_train.seeds", "nada_train.pngs", "nada_train.cli.common",
               "nada_train.cli.launch", "nada_train.errors", "nada_train.fileio")


def test_client_side_imports_no_torch_stack():
    """What nada-client imports, followed through the project's modules: no torch, open_clip, onnx."""
    graph = project_graph()
    seen, todo = set(), ["nada_serve.cli.client", "nada_train.cli.launch"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [d for d in graph.get(m, ()) if d in graph]
    assert seen <= set(CLIENT_SIDE) | {"nada_train", "nada_serve", "nada_train.cli", "nada_serve.cli"}, sorted(seen)
    heavy = {"torch", "torchvision", "open_clip", "onnx", "onnxruntime", "safetensors"}
    for m in seen:
        path = ROOT / (m.replace(".", "/") + ".py")
        path = path if path.exists() else ROOT / m.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not top & heavy, (m, top & heavy)


def test_client_extra_brings_no_torch():
    """pip install 'nada[client]': the base requirements plus the client extra name no torch stack."""
    import re
    from importlib.metadata import requires

    reqs = requires("nada")
    chosen = [r for r in reqs if "extra ==" not in r or re.search(r'extra == "client"', r)]
    names = {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in chosen}
    assert "tritonclient" in names and "numpy" in names and "pillow" in names
    assert not names & {"torch", "torchvision", "open-clip-torch", "open_clip_torch", "onnx", "onnxruntime", "nvidia-pytriton"}
