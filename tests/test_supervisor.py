"""The supervisor's decisions, on a stand-in for tritonserver (the real one: tests/test_recovery.py):
which models it reloads, from what Triton says and the processes alive; when it gives up."""

import subprocess
from types import SimpleNamespace

import pytest

from nada_core.errors import NadaError
from nada_serve import supervisor as module
from nada_serve.supervisor import Stub, Supervisor, python_instances

CONFIGS = {
    "one": {"backend": "python", "instance_group": [{"kind": "KIND_CPU", "count": 1}]},
    "two": {"backend": "python", "instance_group": [{"kind": "KIND_CPU", "count": 2}]},
    "ensemble": {"platform": "ensemble"},
    "loading": {"backend": "python", "instance_group": [{"kind": "KIND_CPU", "count": 1}]},
}


def test_python_instances_are_the_processes_a_config_asks_for():
    assert python_instances(CONFIGS["two"]) == 2
    assert (
        python_instances(
            {"backend": "python", "instance_group": [{"count": 1, "gpus": [0, 1]}, {"count": 3}]}
        )
        == 5
    )
    assert (
        python_instances(CONFIGS["ensemble"]) == 0
        and python_instances({"backend": "onnxruntime", "instance_group": [{"count": 2}]}) == 0
    )


class Process:
    """A tritonserver process: alive (returncode None) or exited; wait() never blocks."""

    def __init__(self, returncode=None):
        self.pid, self.returncode = 4242, returncode

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("tritonserver", timeout)
        return self.returncode


class Client:
    """What the supervisor asks of Triton's gRPC API; `fail_loads` makes every load fail."""

    def __init__(self, states: dict[str, str], fail_loads: bool = False):
        self.states, self.fail_loads, self.calls = states, fail_loads, []

    def get_model_repository_index(self, headers=None, as_json=False):
        return {"models": [{"name": n, "state": s} for n, s in self.states.items()]}

    def get_model_config(self, model, as_json=False):
        self.calls.append(("config", model))
        return {"config": CONFIGS[model]}

    def unload_model(self, model, headers=None):
        self.calls.append(("unload", model))

    def load_model(self, model, headers=None):
        self.calls.append(("load", model))
        if self.fail_loads:
            raise RuntimeError(f"failed to load '{model}': boom")


def watched(monkeypatch, client: Client, live: list[str], process: Process | None = None, **kw) -> Supervisor:
    server = SimpleNamespace(
        process=process or Process(),
        endpoints=SimpleNamespace(grpc="127.0.0.1:1"),
        control_headers={},
        wait_ready=lambda timeout: None,
        start=lambda timeout: None,
        errors=lambda: "E server log line",
    )
    monkeypatch.setattr(
        module,
        "stub_processes",
        lambda pid: {f"{m}_{i}": Stub(100 + i, m, f"{m}_{i}") for i, m in enumerate(live)},
    )
    s = Supervisor(server, log=lambda line: logged.append(line), **kw)
    s._client = lambda: client
    return s


logged: list[str] = []


def test_a_ready_model_short_of_a_process_is_reloaded_and_nothing_else(monkeypatch):
    """'two' asks for two processes and has one; 'one' has its one; the ensemble has none to have; a
    model still loading is not judged. Only 'two' is unloaded and loaded again."""
    client = Client({"one": "READY", "two": "READY", "ensemble": "READY", "loading": "LOADING"})
    s = watched(monkeypatch, client, live=["one", "two"])
    assert s.short_of_processes() == ["two"]
    logged.clear()
    s.check()
    assert [c for c in client.calls if c[0] != "config"] == [("unload", "two"), ("load", "two")]
    assert len(logged) == 1 and "two: its python-backend process died; reloaded in" in logged[0]
    assert ("config", "loading") not in client.calls  # configs are read for READY models only


def test_a_model_that_cannot_be_reloaded_gives_up_in_one_line(monkeypatch):
    client = Client({"one": "READY"}, fail_loads=True)
    s = watched(monkeypatch, client, live=[], start_timeout=0.0)
    with pytest.raises(NadaError) as info:
        s.check()
    assert str(info.value) == "one: could not be reloaded in 0 s: failed to load 'one': boom"


def test_a_server_that_keeps_dying_is_restarted_then_given_up(monkeypatch):
    """Each death is a restart on the same ports, logged; the (max_restarts + 1)-th within the window
    ends nada-serve with the server's own last words."""
    client = Client({})
    s = watched(
        monkeypatch, client, live=[], process=Process(returncode=-9), max_restarts=2, restart_window_s=300.0
    )
    logged.clear()
    s.check()
    s.check()
    assert len(logged) == 2 and all(
        "tritonserver: exited with status -9; restarted on the same ports in" in line for line in logged
    )
    with pytest.raises(NadaError) as info:
        s.check()
    assert (
        str(info.value)
        == "tritonserver died 3 times in 300 s (last status -9); giving up:\nE server log line"
    )
    assert len(logged) == 2


def test_restarts_outside_the_window_are_forgotten(monkeypatch):
    s = watched(
        monkeypatch, Client({}), live=[], process=Process(returncode=1), max_restarts=1, restart_window_s=60.0
    )
    clock = iter([0.0, 0.0, 100.0, 100.0, 200.0, 200.0])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    for _ in range(3):  # a death every 100 s: never two within 60 s
        s.check()
    assert len(s.restarts) == 1
