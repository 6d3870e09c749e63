"""The suite's two tiers, kept true by code instead of by hand.

slow: every test that uses a subprocess (a nada command, tritonserver, torchrun), an export (ONNX,
AOTInductor, a Triton repository) or a torch.compile. The quick tier (`pytest -m "not slow"`) is the
rest: the method's core, in process, each test within its time budget.

Three hooks keep it so (conftest.py installs them):
- at collection, each test's code, its fixtures' and the test helpers they call (followed through
  their bytecode) are read for the things in `slow_uses()`; a test that reaches one is marked slow,
  its `slow` mark saying why;
- at run time an audit hook (subprocesses) and wrappers of torch's compile and export calls see what
  a test really starts: a quick-tier test that starts one of them fails, since the reading above
  missed a path to it;
- a quick-tier test that takes longer than the budget (setup, call and teardown together) fails.

Files are dealt to xdist's workers (`--dist loadfile`: a file's module fixtures, its servers and
exports, are built once) with the most slow tests first, so that no long file is left for last.
"""

from __future__ import annotations

import builtins
import dis
import functools
import importlib
import inspect
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
BUDGET_ENV = "NADA_QUICK_BUDGET_S"  # when set: the budget in seconds, as it is on any machine
# 5 s on the machine the suite was tuned on (Intel Xeon, 2 cores); on a slower one as many more as
# the yardstick below takes it (an AMD EPYC of CI ran the quick tier's tests about 1.4 times slower).
DEFAULT_BUDGET_S = 5.0
YARDSTICK_S = 0.042  # yardstick_s() on the machine the budget was set on (0.038-0.043 s seen)
# The budget is CPU seconds of the test's own thread: a machine busy with the slow tier's servers
# does not inflate them (wall seconds do, 4x seen), and with one torch thread per worker the work
# runs on that thread. Seconds on the clock get WAITING_FACTOR times as many, to catch waits.
WAITING_FACTOR = 4


def slow_uses() -> dict[int, tuple[Any, str]]:
    """id(object) -> (object, what a test that reaches it uses)."""
    import subprocess

    import torch
    import torch._dynamo

    from benchmarks import encoder, inference, load
    from nada_app.views import Serving
    from nada_export import aoti_engine, engines, onnx_export, pipeline
    from nada_serve.server import TritonServer
    from nada_world.base import frozen_images

    found: list[tuple[Any, str]] = [
        *(
            (getattr(subprocess, f), "a subprocess")
            for f in ("Popen", "run", "call", "check_call", "check_output")
        ),
        (pipeline.export, "an export (a Triton repository)"),
        (onnx_export.export_graph, "an ONNX export"),
        (onnx_export.export_verified, "an ONNX export"),
        (torch.onnx.export, "an ONNX export"),
        (aoti_engine.build_package, "an AOTInductor compile"),
        (engines.build_aoti, "an AOTInductor compile"),
        (engines.build_tensorrt, "a TensorRT build"),
        (TritonServer, "a tritonserver"),
        (load.Server, "nada-serve"),
        (Serving, "an export and a tritonserver (nada-app's Serve tab)"),
        (frozen_images, "the world's evaluation (its generator's 1,024 images judged)"),
        (load.main, "nada-serve"),
        (inference.main, "exports and a tritonserver"),
        (encoder.main, "full-size encoders, exports and a tritonserver"),
        (torch.compile, "a torch.compile"),
        (torch._dynamo, "a torch.compile (Dynamo)"),
    ]
    return {id(obj): (obj, why) for obj, why in found}


def ours(obj: Any) -> bool:
    """A function or class written in the tests folder (a decorated one too, such as a
    contextmanager): its code is followed too."""
    obj = _unwrapped(getattr(obj, "__func__", obj))
    code = getattr(obj, "__code__", None)
    if code is not None:
        return Path(code.co_filename).resolve().is_relative_to(TESTS)
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    return isinstance(obj, type) and path is not None and Path(path).resolve().is_relative_to(TESTS)


def _unwrapped(obj: Any) -> Any:
    """The function a functools.wraps decorator wrapped (contextmanager's helper is contextlib's)."""
    try:
        return inspect.unwrap(obj) if callable(obj) else obj
    except ValueError:  # a wrapping cycle
        return obj


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception:  # a module that cannot be imported here: nothing to follow
        return None


def _attribute(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def reached(func: Any, registry: dict[int, tuple[Any, str]], seen: set[int] | None = None) -> str | None:
    """What slow thing `func` reaches, as 'WHAT via NAME', following the test helpers it names, the
    classes of the tests folder it names (their methods) and its inner functions; None if nothing."""
    seen = set() if seen is None else seen
    func = _unwrapped(getattr(func, "__func__", func))
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return None
    seen.add(id(code))
    return _reached_code(code, getattr(func, "__globals__", {}), registry, seen)


def _reached_code(code: types.CodeType, namespace: dict, registry: dict, seen: set[int]) -> str | None:
    local: dict[str, Any] = {}  # names bound in this code by imports and assignments of what we resolved
    current, chain = None, ""  # the object the instructions so far name, and how it was named
    module, module_name = None, ""  # the last IMPORT_NAME's module (IMPORT_FROM reads from it)
    fromlist: Any = None
    for ins in dis.get_instructions(code):
        op, arg = ins.opname, ins.argval
        if op == "LOAD_CONST":
            fromlist, current = arg, None
            if isinstance(arg, types.CodeType):  # an inner function, lambda or comprehension
                why = _reached_code(arg, namespace, registry, seen)
                if why:
                    return why
            continue
        if op in ("LOAD_GLOBAL", "LOAD_NAME"):
            current, chain = namespace.get(arg, getattr(builtins, arg, None)), arg
        elif op in ("LOAD_FAST", "LOAD_DEREF", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"):
            current, chain = local.get(arg), arg
        elif op in ("LOAD_ATTR", "LOAD_METHOD"):
            current, chain = _attribute(current, arg), f"{chain}.{arg}"
        elif op == "IMPORT_NAME":  # `import a.b` binds a; `from a.b import c` reads c off a.b
            module, module_name = _import(arg), arg
            current = module if fromlist else sys.modules.get(arg.split(".")[0])
            chain = arg if fromlist else arg.split(".")[0]
        elif op == "IMPORT_FROM":
            current, chain = _attribute(module, arg), f"{module_name}.{arg}"
        elif op.startswith("STORE_"):
            if current is not None and isinstance(arg, str):
                local[arg] = current
            current = None
            continue
        else:
            current = None
            continue
        if current is None:
            continue
        if id(current) in registry:
            return f"{registry[id(current)][1]} via {chain}"
        if ours(current):
            targets = list(vars(current).values()) if isinstance(current, type) else [current]
            for target in targets:
                why = reached(target, registry, seen)
                if why:
                    return f"{why} (in {chain})"
    return None


def item_reason(item: pytest.Item, registry: dict, known: dict[int, str | None] | None = None) -> str | None:
    """Why a collected test is slow: its own code, then each fixture of the tests folder it uses.
    known: each function's answer so far (a fixture or a parametrized test is read once, not per item)."""
    known = {} if known is None else known
    functions = [("the test", getattr(item, "function", None))]
    info = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info else ():
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if ours(fixturedef.func):
                functions.append((f"fixture {name}", fixturedef.func))
    for where, func in functions:
        if func is None:
            continue
        if id(func) not in known:
            known[id(func)] = reached(func, registry)
        if known[id(func)]:
            return f"{where} uses {known[id(func)]}"
    return None


# ---- the hooks -------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    registry, known = slow_uses(), {}
    for item in items:
        why = item_reason(item, registry, known)
        if why:
            item.add_marker(pytest.mark.slow(reason=why))
    # The files with the most slow tests first: xdist hands out files in this order, and a long file
    # dealt last leaves one worker running alone at the end.
    slow_in_file: dict[str, int] = {}
    for item in items:
        slow_in_file[item.location[0]] = slow_in_file.get(item.location[0], 0) + (
            item.get_closest_marker("slow") is not None
        )
    items.sort(key=lambda item: -slow_in_file[item.location[0]])


class RuntimeGuard:
    """What the running test starts: subprocesses (audit events), compiles and exports (wrappers)."""

    def __init__(self):
        self.quick_test: str | None = None  # the nodeid of the quick-tier test now running
        self.started: list[str] = []
        sys.addaudithook(self._audit)
        import torch

        torch.compile = self._watched(torch.compile, "a torch.compile")
        torch.onnx.export = self._watched(torch.onnx.export, "an ONNX export")
        import torch._inductor

        torch._inductor.aoti_compile_and_package = self._watched(
            torch._inductor.aoti_compile_and_package, "an AOTInductor compile"
        )

    def _audit(self, event: str, args: tuple) -> None:
        if event == "subprocess.Popen" and self.quick_test is not None:
            self.started.append(f"a subprocess ({' '.join(map(str, args[1] or [args[0]]))[:120]})")

    def _watched(self, fn: Callable, what: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self.quick_test is not None:
                self.started.append(what)
            return fn(*args, **kwargs)

        return wrapper


GUARD: RuntimeGuard | None = None


def pytest_configure(config: pytest.Config) -> None:
    global GUARD
    if GUARD is None:  # once a process: a session run inside a test (tests/test_tiers.py) shares it
        GUARD = RuntimeGuard()


def under_mutmut() -> bool:
    """mutmut runs the suite in its copy of the tree, mutants/, with MUTANT_UNDER_TEST set while it
    tries one. There a test is killed by its assertions, never by its time (its tracing slows every test)."""
    return "MUTANT_UNDER_TEST" in os.environ or Path.cwd().name == "mutants"


def yardstick_s() -> float:
    """This thread's CPU seconds for a fixed piece of the quick tier's kind of work, on one torch
    thread: small convolutions forward and backward, and a run of tiny ops (Python and dispatch
    overhead). The least of seven tries, so a moment of contention does not count."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, 32, 32, 32, generator=gen, requires_grad=True)
        w = torch.randn(32, 32, 3, 3, generator=gen, requires_grad=True)
        best = float("inf")
        for _ in range(7):
            start = time.thread_time()
            y = x
            for _ in range(3):
                y = F.leaky_relu(F.conv2d(y, w, padding=1), 0.2)
            y.square().mean().backward()
            small = torch.zeros(16)
            for _ in range(600):
                small = small * 0.5 + 1
            best = min(best, time.thread_time() - start)
        return best
    finally:
        torch.set_num_threads(threads)


@functools.cache
def machine_factor() -> float:
    """How many times slower than the machine the budget was set on this one runs the yardstick
    (never under 1: a faster machine keeps the budget, so that the yardstick's noise fails nothing)."""
    return max(1.0, yardstick_s() / YARDSTICK_S)


def budget_s() -> float:
    if under_mutmut():
        return float("inf")
    if BUDGET_ENV in os.environ:
        return float(os.environ[BUDGET_ENV])
    return DEFAULT_BUDGET_S * machine_factor()


def pytest_report_header(config: pytest.Config) -> str:
    source = (
        BUDGET_ENV if BUDGET_ENV in os.environ else f"{DEFAULT_BUDGET_S:g} s x {machine_factor():.2f} here"
    )
    return f"quick tier's budget: {budget_s():.1f} s of CPU a test ({source})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    quick = item.get_closest_marker("slow") is None
    GUARD.quick_test, GUARD.started = (item.nodeid if quick else None), []
    item.user_properties.append(("tier", "quick" if quick else "slow"))
    item._nada_clocks = (time.perf_counter(), time.thread_time())
    try:
        return (yield)
    finally:
        GUARD.quick_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if item.get_closest_marker("slow") is not None:
        return report
    problems = []
    if GUARD.started and call.when == "call":
        problems.append(
            f"it is in the quick tier but started {GUARD.started[0]}; tests/tiers.py did not see the path to "
            "it: let the test reach it through a helper that slow_uses() lists, or list it there"
        )
    if call.when == "teardown":
        wall0, cpu0 = item._nada_clocks
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        if cpu > budget_s() or wall > WAITING_FACTOR * budget_s():
            problems.append(
                f"it is in the quick tier and took {cpu:.1f} s of CPU ({wall:.1f} s on the clock; setup, call "
                f"and teardown), over the budget of {budget_s():.3g} s of CPU or "
                f"{WAITING_FACTOR * budget_s():.3g} s on the clock (tests/tiers.py): make it faster, or let it "
                "use what makes a test slow"
            )
    if problems and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: " + "; ".join(problems)
    return report
