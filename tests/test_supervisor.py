"""The supervisor's decisions, on a stand-in for tritonserver (the real one: tests/test_recovery.py):
which models it reloads, from what Triton says and the processes alive; when it gives up."""

import subprocess
import threading
from pathlib import Path
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
    """What the supervisor asks of Triton's gRPC API, on a model table. `fail_loads` makes every load
    fail; `dependents` are the ensembles an unload takes down with a model, loaded again with it
    unless `loads_dependents` is False (an ensemble whose unload finished late); an unloaded model
    reads UNLOADING for `unloading_looks` looks (until loaded again); a loading model is ready after one
    look."""

    def __init__(
        self,
        states: dict[str, str],
        fail_loads: bool = False,
        dependents: dict[str, list[str]] | None = None,
        loads_dependents: bool = True,
        unloading_looks: int = 0,
    ):
        self.states, self.fail_loads, self.calls = states, fail_loads, []
        self.dependents, self.loads_dependents = dependents or {}, loads_dependents
        self.unloading_looks, self.looks_left = unloading_looks, {}

    def get_model_repository_index(self, headers=None, as_json=False, client_timeout=None):
        models = [{"name": n, "state": s} for n, s in self.states.items()]
        self.states = {n: "READY" if s == "LOADING" else s for n, s in self.states.items()}
        for name, left in list(self.looks_left.items()):
            self.looks_left[name] = left - 1
            if left <= 1:
                self.states[name] = "UNAVAILABLE"
                del self.looks_left[name]
        return {"models": models}

    def get_model_config(self, model, as_json=False, client_timeout=None):
        self.calls.append(("config", model))
        return {"config": CONFIGS[model]}

    def unload_model(self, model, headers=None, client_timeout=None):
        self.calls.append(("unload", model))
        for name in self.dependents.get(model, []):
            self.states[name] = "UNAVAILABLE"
        if self.unloading_looks:
            self.states[model], self.looks_left[model] = "UNLOADING", self.unloading_looks
        else:
            self.states[model] = "UNAVAILABLE"

    def load_model(self, model, headers=None, client_timeout=None):
        self.calls.append(("load", model, self.states[model]))
        if self.fail_loads:
            raise RuntimeError(f"failed to load '{model}': boom")
        self.states[model] = "READY"
        self.looks_left.pop(model, None)
        if self.loads_dependents:
            for name in self.dependents.get(model, []):
                self.states[name] = "READY"


def watched(
    monkeypatch, repository: Path, client: Client, live: list[str], process: Process | None = None, **kw
) -> Supervisor:
    server = SimpleNamespace(
        process=process or Process(),
        endpoints=SimpleNamespace(grpc="127.0.0.1:1"),
        control_headers={},
        wait_ready=lambda timeout: None,
        start=lambda timeout, echo=False: None,
        errors=lambda: "E server log line",
        repository=repository,
        not_loaded=set(),
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


def test_a_ready_model_short_of_a_process_is_reloaded_and_nothing_else(monkeypatch, tmp_path):
    """'two' asks for two processes and has one; 'one' has its one; the ensemble has none to have; a
    model still loading is not judged. Only 'two' is unloaded and loaded again."""
    client = Client({"one": "READY", "two": "READY", "ensemble": "READY", "loading": "LOADING"})
    index = [{"name": n, "state": state} for n, state in client.states.items()]
    s = watched(monkeypatch, tmp_path, client, live=["one", "two"])
    assert s.short_of_processes(client, index) == ["two"]
    client.calls.clear()
    logged.clear()
    s.check()
    assert [c for c in client.calls if c[0] != "config"] == [
        ("unload", "two"),
        ("load", "two", "UNAVAILABLE"),
    ]
    assert len(logged) == 1 and "two: its python-backend process died; reloaded in" in logged[0]
    assert ("config", "loading") not in client.calls  # configs are read for READY models only


def test_a_reload_does_not_wait_for_an_unload_that_never_finishes(monkeypatch, tmp_path):
    """Triton never finishes unloading a model whose process is dead; the new copy loads beside it."""
    client = Client({"two": "READY"}, unloading_looks=10**9)
    watched(monkeypatch, tmp_path, client, live=["two"], start_timeout=2.0).check()
    assert [c for c in client.calls if c[0] != "config"] == [("unload", "two"), ("load", "two", "UNLOADING")]


def test_an_ensemble_left_unloaded_by_a_reload_is_loaded_again(monkeypatch, tmp_path):
    """Triton loads the ensembles using a model with it, but one whose unload finished after that load
    stays unloaded: the reload is not done until every model is ready again."""
    client = Client(
        {"two": "READY", "ensemble": "READY"}, dependents={"two": ["ensemble"]}, loads_dependents=False
    )
    logged.clear()
    watched(
        monkeypatch, tmp_path, client, live=["two"], start_timeout=5.0
    ).check()  # a reload that never loads it fails in 5 s
    loads = [c for c in client.calls if c[0] == "load"]
    assert loads == [("load", "two", "UNAVAILABLE"), ("load", "ensemble", "UNAVAILABLE")]
    assert client.states == {"two": "READY", "ensemble": "READY"}
    assert (
        len(logged) == 1 and "two: its python-backend process died; reloaded (and ensemble) in" in logged[0]
    )


def test_a_model_found_unavailable_is_loaded_again(monkeypatch, tmp_path):
    client = Client({"one": "READY", "ensemble": "UNAVAILABLE"})
    logged.clear()
    watched(monkeypatch, tmp_path, client, live=["one"]).check()
    assert [c for c in client.calls if c[0] == "load"] == [("load", "ensemble", "UNAVAILABLE")]
    assert len(logged) == 1 and "ensemble: it was unavailable; loaded again in" in logged[0]


def test_a_model_that_cannot_be_reloaded_gives_up_in_one_line(monkeypatch, tmp_path):
    client = Client({"one": "READY"}, fail_loads=True)
    s = watched(monkeypatch, tmp_path, client, live=[], start_timeout=0.0)
    with pytest.raises(NadaError) as info:
        s.check()
    assert str(info.value) == "one: could not be reloaded in 0 s: failed to load 'one': boom"


class DiesOnUnload(Client):
    """A tritonserver that crashes while a model reloads (as one did on the request after Triton
    called a paused model process "not healthy"): from the unload on, the process has exited and every
    call fails as gRPC fails on a closed port."""

    def __init__(self, states, process: Process):
        super().__init__(states)
        self.process = process

    def unload_model(self, model, headers=None, client_timeout=None):
        super().unload_model(model)
        self.process.returncode = -11

    def load_model(self, model, headers=None, client_timeout=None):
        if self.process.returncode is not None:
            self.calls.append(("load", model, "refused"))
            raise ConnectionError("failed to connect to all addresses: Connection refused")
        super().load_model(model)


def test_a_server_that_dies_while_a_model_reloads_is_restarted(monkeypatch, tmp_path):
    """The reload's load is not retried against a dead server until its deadline (then given up, the
    server never started again): the look restarts the server."""
    process = Process()
    client = DiesOnUnload({"two": "READY"}, process)
    s = watched(monkeypatch, tmp_path, client, live=[], process=process, start_timeout=3.0)
    logged.clear()
    s.check()
    assert [c for c in client.calls if c[0] == "load"] == [("load", "two", "refused")]
    assert (
        len(logged) == 1 and "tritonserver: exited with status -11; restarted on the same ports" in logged[0]
    )
    assert len(s.restarts) == 1


def test_a_server_that_keeps_dying_is_restarted_then_given_up(monkeypatch, tmp_path):
    """Each death is a restart on the same ports, logged; the (max_restarts + 1)-th within the window
    ends nada-serve with the server's own last words."""
    client = Client({})
    s = watched(
        monkeypatch,
        tmp_path,
        client,
        live=[],
        process=Process(returncode=-9),
        max_restarts=2,
        restart_window_s=300.0,
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


def test_restarts_outside_the_window_are_forgotten(monkeypatch, tmp_path):
    s = watched(
        monkeypatch,
        tmp_path,
        Client({}),
        live=[],
        process=Process(returncode=1),
        max_restarts=1,
        restart_window_s=60.0,
    )
    clock = iter([0.0, 0.0, 100.0, 100.0, 200.0, 200.0])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    for _ in range(3):  # a death every 100 s: never two within 60 s
        s.check()
    assert len(s.restarts) == 1


def test_watch_looks_until_stopped_and_raises_what_it_cannot_mend(monkeypatch, tmp_path):
    """nada-serve and nada-app's Serve tab both run `watch`: a look every interval until stopped, and a
    model that cannot be reloaded ends the watch with its one line (the caller stops the server)."""
    client = Client({"one": "READY"})
    s = watched(monkeypatch, tmp_path, client, live=["one"], interval=0.01)
    stop, looks = threading.Event(), []
    real_check = s.check

    def counted():
        looks.append(1)
        real_check()
        if len(looks) == 3:
            stop.set()

    s.check = counted
    s.watch(stop)
    assert len(looks) == 3 and not [c for c in client.calls if c[0] in ("load", "unload")]

    client = Client({"one": "READY"}, fail_loads=True)
    s = watched(monkeypatch, tmp_path, client, live=[], interval=0.01, start_timeout=0.0)
    with pytest.raises(NadaError, match=r"^one: could not be reloaded in 0 s: failed to load 'one': boom$"):
        s.watch(threading.Event())


def test_nada_serve_that_gives_up_stops_its_tritonserver_and_says_why(monkeypatch, tmp_path, capsys):
    """A watch that cannot mend a model ends nada-serve with the one line and status 2, and takes its
    tritonserver down with it (started in a session of its own, it would otherwise go on serving,
    unwatched, holding the ports)."""
    import sys

    from nada_serve.cli import serve as cli

    events = []

    class Server:
        def __init__(self, repository, *ports, host):
            self.repository, self.process = repository, Process()
            self.endpoints = SimpleNamespace(grpc="127.0.0.1:1", http="127.0.0.1:2", metrics="127.0.0.1:3")
            self.not_loaded: set[str] = set()

        def start(self, timeout, echo=False):
            events.append("start")
            return self

        def models(self):
            return [{"name": "one", "state": "READY"}]

        def stop(self):
            events.append("stop")

    looks = iter([None, None, NadaError("one: could not be reloaded in 300 s: boom")])

    def check(self):
        failure = next(looks)
        if failure is not None:
            raise failure

    monkeypatch.setattr(cli, "TritonServer", Server)
    monkeypatch.setattr(cli.Supervisor, "check", check)
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # pytest's own Ctrl-C stays
    monkeypatch.setattr(sys, "argv", ["nada-serve", str(tmp_path), "--grpc-port", "0"])
    with pytest.raises(SystemExit) as info:
        cli.main_entry()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and events == ["start", "stop"]
    assert out.splitlines()[-1] == "models: one"
    assert err == "nada-serve: error: one: could not be reloaded in 300 s: boom\n"


class Starts:
    """A tritonserver's starts, each ending as `outcomes` says: "ready", or a status it exits with while
    loading (negative: killed by that signal, as Triton's python backend aborts (-6) now and then)."""

    def __init__(self, outcomes: list):
        self.outcomes, self.process, self.log_lines = list(outcomes), Process(), ["E the last words"]
        self.not_loaded: set[str] = set()

    def start(self, timeout, echo=False):
        from nada_serve.server import ServerCrashed

        outcome = self.outcomes.pop(0)
        if outcome == "ready":
            self.process = Process()
            return self
        self.process = Process(returncode=outcome)
        died = ServerCrashed if outcome < 0 else NadaError
        raise died(f"tritonserver exited with status {outcome} while loading repo:\nE the last words")

    def errors(self):
        return "E the last words"


def test_a_server_that_crashes_while_loading_is_started_again_and_a_model_error_is_not(monkeypatch):
    """Killed by a signal while loading (a crash): started again, each crash a restart in the window;
    exited with a status of its own (a model that fails to load): refused at once, as it said."""
    logged.clear()
    server = Starts([-6, -11, "ready"])
    s = Supervisor(server, log=logged.append, max_restarts=5)
    s.start(echo=True)
    assert server.outcomes == [] and len(s.restarts) == 2 and s.echo
    assert [line.split(" ", 3)[3] for line in logged] == [
        "tritonserver: exited with status -6 while loading; starting it again",
        "tritonserver: exited with status -11 while loading; starting it again",
    ]

    server = Starts([1, "ready"])
    with pytest.raises(NadaError, match=r"^tritonserver exited with status 1 while loading repo:"):
        Supervisor(server, log=logged.append).start()
    assert server.outcomes == ["ready"]

    server = Starts([-6, -6, -6, "ready"])
    with pytest.raises(NadaError) as info:
        Supervisor(server, log=logged.append, max_restarts=2).start()
    assert str(info.value) == (
        "tritonserver died 3 times in 300 s (last status -6); giving up:\nE the last words"
    )


def test_a_restart_that_crashes_while_loading_is_tried_again(monkeypatch):
    """kill -9 of the server, then its restart aborts while loading: started once more, not given up."""
    server = Starts([-6, "ready"])
    server.process = Process(returncode=-9)
    logged.clear()
    s = Supervisor(server, log=logged.append, max_restarts=5)
    s.check()
    assert server.outcomes == [] and len(s.restarts) == 2
    assert "tritonserver: exited with status -6 while loading; starting it again" in logged[0]
    assert "tritonserver: exited with status -9; restarted on the same ports in" in logged[1]


def test_wait_ready_calls_a_server_killed_by_a_signal_a_crash(tmp_path):
    from nada_serve.server import ServerCrashed, TritonServer

    server = TritonServer(tmp_path)
    server.process = Process(returncode=-6)
    with pytest.raises(ServerCrashed, match=r"^tritonserver exited with status -6 while loading"):
        server.wait_ready(5)
    server.process = Process(returncode=1)
    with pytest.raises(NadaError) as info:
        server.wait_ready(5)
    assert not isinstance(info.value, ServerCrashed)


def test_a_server_is_ready_only_once_it_listens_on_every_endpoint(tmp_path, monkeypatch):
    """tritonserver loads its models, then starts gRPC, HTTP and metrics one after another and exits if
    one cannot bind: models READY over gRPC while the HTTP port turns out taken (seen in the suite) is a
    server about to exit. Ready waits for its word on all three; a server that never gives it is not
    ready, and the error names the endpoints it is silent on."""
    import tritonclient.grpc as grpcclient

    from nada_serve.server import TritonServer

    class Answers:  # Triton over gRPC: up, every model READY
        def __init__(self, url):
            pass

        def is_server_ready(self, **kw):
            return True

        def get_model_repository_index(self, **kw):
            return {"models": [{"name": "m", "state": "READY"}]}

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Answers)
    log = tmp_path / "log"
    server = TritonServer(tmp_path)
    monkeypatch.setattr(server, "command", lambda: ["sh", "-c", f"cat {log}; exec sleep 60"])
    log.write_text('I1207 grpc_server.cc] "Started GRPCInferenceService at 127.0.0.1:1"\n')
    with pytest.raises(
        NadaError, match=r"^tritonserver was not ready after 2 s \(not ready: its http and metrics "
    ):
        server.start(timeout=2)
    assert server.process.poll() is not None  # stopped with its refusal
    with log.open("a") as f:
        f.write('I1207 http_server.cc] "Started HTTPService at 127.0.0.1:2"\n')
        f.write('I1207 http_server.cc] "Started Metrics Service at 127.0.0.1:3"\n')
    try:
        assert server.start(timeout=20) is server and server.endpoints_started == {"grpc", "http", "metrics"}
    finally:
        server.stop()


def test_what_a_dead_server_left_running_is_ended_with_it(tmp_path):
    """A model process whose tritonserver was killed is left to init and may never exit (seen under
    load: still running after nada-serve had stopped); stopping the server, or starting it again, ends
    every process left in its session."""
    import os
    import signal

    from nada_serve.server import TritonServer
    from tests.conftest import wait_for

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    server = TritonServer(tmp_path)
    # a session whose leader exits at once, leaving its child running, as a killed server leaves a stub
    server.process = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    left = int(server.process.stdout.readline())
    try:
        server.process.wait(10)
        assert os.getpgid(left) == server.process.pid and not gone(left)
        server.stop()
        wait_for(lambda: gone(left), 5, "the process left in the dead server's session to end")
    finally:
        if not gone(left):
            os.kill(left, signal.SIGKILL)


def _backend_folder_after(barrier, answers) -> None:
    """One of several processes asking for the python backend's folder at the same moment."""
    from nada_serve.server import backend_directory

    barrier.wait()
    folder = backend_directory()
    library = folder / "python" / "libtriton_python.so"
    answers.put((str(folder), library.stat().st_ino, library.stat().st_ctime_ns))


def test_servers_started_at_once_never_write_a_library_another_has_loaded(tmp_path, monkeypatch):
    """Four processes make the python backend's folder at the same moment (as test workers, or two
    nada-serves, start their first servers): one folder, whole, each file as pytriton ships it, and
    never written again once a process has it (a copy over a loaded libtriton_python.so crashed
    tritonserver while loading)."""
    import hashlib
    import multiprocessing

    from nada_serve.server import STUB_NAME, pytriton_root

    monkeypatch.setenv("NADA_CACHE", str(tmp_path))
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_backend_folder_after, args=(barrier, answers)) for _ in range(4)]
    for w in workers:
        w.start()
    seen = [answers.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(10)
    (folder,) = {s[0] for s in seen}
    library = Path(folder) / "python" / "libtriton_python.so"
    assert {(s[1], s[2]) for s in seen} == {(library.stat().st_ino, library.stat().st_ctime_ns)}
    assert [p.name for p in tmp_path.iterdir()] == [Path(folder).name]  # no half-made folder left
    version = Path(folder).name.split("-")[2]
    sources = {
        "libtriton_python.so": pytriton_root() / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": pytriton_root()
        / "backends"
        / "python"
        / "triton_python_backend_utils.py",
        STUB_NAME: pytriton_root() / "python_backend_stubs" / version.removeprefix("py") / STUB_NAME,
    }
    made = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (Path(folder) / "python").iterdir()}
    assert made == {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in sources.items()}
