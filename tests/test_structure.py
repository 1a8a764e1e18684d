"""The package's structure: its imports form no cycle (engine wrappers at the bottom, files and
importers above them, models above those), counting function-local imports too."""

import ast
import importlib.machinery
import os

import numpy as np
import pytest

import fastlstm

PKG_DIR = os.path.dirname(os.path.abspath(fastlstm.__file__))


def _modules():
    """Module name -> (path, is_package) of every module of the installed package (path None
    for the compiled extension, which imports nothing of the package)."""
    out = {}
    for root, dirs, files in os.walk(PKG_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(root, os.path.dirname(PKG_DIR)).replace(os.sep, ".")
        for f in files:
            if f.endswith(".py"):
                name = rel if f == "__init__.py" else f"{rel}.{f[:-3]}"
                out[name] = (os.path.join(root, f), f == "__init__.py")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                if f.endswith(suffix):
                    out[f"{rel}.{f[:-len(suffix)]}"] = (None, False)
    return out


def _imports(name, path, is_package, modules):
    """The package's modules that ``name`` imports anywhere in its source (module level or
    inside functions). ``from P import x`` counts as importing ``P.x`` when that is a module,
    else ``P``. A submodule's implicit import of its parent package is not counted: a
    package's ``__init__`` re-exports its submodules by design."""
    if path is None:
        return set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [(mod, a.name) for a in node.names]
        else:
            continue
        for mod, attr in targets:
            if attr is not None and f"{mod}.{attr}" in modules:
                found.add(f"{mod}.{attr}")
            elif mod in modules:
                found.add(mod)
    found.discard(name)
    return found


def _find_cycle(graph):
    """One cycle of ``graph`` (node -> set of nodes) as a list of nodes, or None."""
    state = {}
    stack = []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


def _graph():
    modules = _modules()
    return {name: _imports(name, path, is_pkg, modules)
            for name, (path, is_pkg) in modules.items()}


def test_the_package_imports_form_no_cycle():
    graph = _graph()
    assert "fastlstm.io.files" in graph and "fastlstm.bench.timing" in graph
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_downwards_only():
    """The engine wrappers import no file or model code; files and importers no models."""
    graph = _graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            for m in graph.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    assert not {m for m in reach("fastlstm.rnn") if m.startswith(("fastlstm.io",
                                                                  "fastlstm.models"))}
    for importer in ("files", "torch", "keras", "onnx", "safetensors"):
        assert "fastlstm.models" not in reach(f"fastlstm.io.{importer}")


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert _find_cycle(graph) == cycle


def test_function_local_imports_count(tmp_path):
    """A cycle hidden in a function body (``from . import io`` inside a method) is an edge."""
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    modules = {"p": (str(pkg / "__init__.py"), True), "p.a": (str(pkg / "a.py"), False),
               "p.b": (str(pkg / "b.py"), False)}
    graph = {n: _imports(n, path, is_pkg, modules) for n, (path, is_pkg) in modules.items()}
    assert graph["p.b"] == {"p.a"} and graph["p.a"] == {"p.b"}
    assert _find_cycle(graph) is not None


# ------------------------------------------------------------------ one parameter layout
_VARIANTS = [
    dict(cell="lstm"),
    dict(cell="gru"),
    dict(cell="lstm", num_layers=3, bidirectional=True),
    dict(cell="gru", num_layers=2, bidirectional=True, bias=False),
    dict(cell="lstm", num_layers=2, proj_size=3),
    dict(cell="lstm", num_layers=2, bidirectional=True, proj_size=3, peephole=True),
    dict(cell="lstm", peephole=True, bias=False),
]


@pytest.mark.parametrize("v", _VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_engine_layout_agrees_with_the_reference(v):
    """The engine's layout (bound once, fastlstm.rnn.param_layout) and the reference's
    deliberately independent copy name the same tensors with the same shapes, in the flat
    buffer's order, with contiguous offsets; modules and model files use the engine's."""
    from fastlstm import reference
    from fastlstm.rnn import param_layout

    I, H = 7, 9
    L, D = v.get("num_layers", 1), 2 if v.get("bidirectional") else 1
    layout = param_layout(v["cell"], I, H, L, v.get("bidirectional", False), v.get("bias", True),
                          v.get("proj_size", 0), v.get("peephole", False))
    ref = reference._expected_shapes(v["cell"], I, H, L, D, v.get("proj_size", 0),
                                     v.get("peephole", False), v.get("bias", True))
    assert [(n, s) for n, s, _ in layout] == list(ref.items())
    offset = 0
    for _, shape, off in layout:
        assert off == offset
        offset += int(np.prod(shape))
    kwargs = {k: x for k, x in v.items() if k != "cell"}
    module = (fastlstm.LSTM if v["cell"] == "lstm" else fastlstm.GRU)(I, H, **kwargs)
    assert module.flat_params.size == offset
    assert {n: p.shape for n, p in module.params.items()} == ref
    for name, shape, off in layout:  # the views sit where the layout says
        assert np.shares_memory(module.params[name], module.flat_params[off:off + 1])


def test_param_layout_refuses_invalid_combinations():
    from fastlstm.rnn import param_layout

    with pytest.raises(ValueError, match="proj_size"):
        param_layout("lstm", 3, 4, proj_size=4)
    with pytest.raises(ValueError, match="peephole"):
        param_layout("gru", 3, 4, peephole=True)
    with pytest.raises(ValueError, match="cell"):
        param_layout("rnn", 3, 4)


def test_stream_is_the_name_and_lstmstream_its_alias():
    assert fastlstm.LSTMStream is fastlstm.Stream
    assert isinstance(fastlstm.GRU(3, 4).stream(), fastlstm.Stream)
