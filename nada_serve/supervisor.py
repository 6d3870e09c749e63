"""Keeps a served repository serving: a model whose python-backend process died is reloaded (the
ensembles that use it come back with it), a tritonserver that died is started again on the same
ports. Each event is logged with the time it took.

Triton alone does neither: a killed stub process leaves its model failing every request ("Stub
process ... is not healthy") while its readiness still says ready. So each look compares what Triton
says (the models it has READY, and how many instances each python-backend model's config asks for)
with the stub processes alive under it; a model short of a process is unloaded at once (readiness
says not ready until the reload has finished) and loaded again. Nothing is remembered from an earlier
look, so a process that dies at any time, in the first second of serving too, is found.

It also loads what a later nada-export changed in the repository (a domain added to a multi-domain
model, a new generator): each look compares every model folder's files (names, sizes, times) with the
last look's, and loads the models whose files changed, composing models before ensembles, while the
others keep serving. A load Triton refuses (a broken model, one too large for the GPU) is logged once
and not tried again until its files change: Triton keeps serving the version it had loaded, and the
watch goes on with the rest rather than give up on the whole server. A server that dies after such a
refusal is started again without the refused models (and the ensembles that use them), which the next
export that changes the repository brings back.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nada_core.cli import one_line
from nada_core.errors import NadaError
from nada_serve.server import STUB_NAME, ServerCrashed, TritonServer, loadable, not_ready

# a repository-index or config request to a live tritonserver answers in milliseconds; one that does
# not answer in this long is a server that has stopped answering
CALL_TIMEOUT_S = 30.0
# A model a later export changed is loaded (one call, however long the load takes), its refusals
# retried this long: a load Triton refuses is refused again (a broken or too large model); Triton keeps
# the version it had loaded serving, and the watch goes on with the rest.
CHANGED_LOAD_RETRY_S = 10.0


@dataclass
class Stub:
    pid: int
    model: str
    instance: str


def stub_processes(server_pid: int) -> dict[str, Stub]:
    """The live python-backend processes of one tritonserver, by instance name. A stub's command line
    is: stub, <repository>/<model>/<version>/model.py, ..., <instance name>, ... (the instance name
    is the eighth argument); an exited stub not yet reaped (state Z) counts as gone."""
    found: dict[str, Stub] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # exited while we looked
            continue
        if (
            not argv[0].endswith(STUB_NAME.encode())
            or int(ppid) != server_pid
            or state == "Z"
            or len(argv) < 9
        ):
            continue
        instance = argv[8].decode()
        found[instance] = Stub(int(entry), Path(argv[1].decode()).parents[1].name, instance)
    return found


def now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def python_instances(config: dict) -> int:
    """How many stub processes a model's config (Triton's JSON) asks for: one per instance of a
    python-backend model, none for ensembles and native backends."""
    if config.get("backend") != "python":
        return 0
    return sum(
        int(g.get("count", 1)) * max(1, len(g.get("gpus", []))) for g in config.get("instance_group", [])
    )


def repository_files(repository: Path) -> dict[str, tuple]:
    """Each model folder of the repository (one with a config.pbtxt) -> its files' names, sizes and
    modification times: what a new export changes (the models it keeps are copied with their times)."""
    out = {}
    for folder in sorted(p for p in Path(repository).iterdir() if (p / "config.pbtxt").is_file()):
        files = []
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                files.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
        out[folder.name] = tuple(files)
    return out


def is_ensemble(folder: Path) -> bool:
    return 'platform: "ensemble"' in (folder / "config.pbtxt").read_text()


class Supervisor:
    """Watches `server`: `check` is one look, `watch` looks every `interval` seconds until stopped
    (nada-serve's loop and nada-app's Serve tab both run `watch`)."""

    def __init__(
        self,
        server: TritonServer,
        interval: float = 0.25,
        log: Callable[[str], None] = print,
        start_timeout: float = 300.0,
        max_restarts: int = 5,
        restart_window_s: float = 300.0,
        skip_unloadable: bool = False,
    ):
        """skip_unloadable: a start that fails because tritonserver cannot load some models starts again
        without them (and the ensembles that use them), naming them, rather than refusing to serve."""
        self.server, self.interval, self.log = server, interval, log
        self.start_timeout, self.max_restarts, self.restart_window_s = (
            start_timeout,
            max_restarts,
            restart_window_s,
        )
        self.instances: dict[
            str, int
        ] = {}  # model -> stub processes its config asks for (configs do not change while served)
        self.restarts: list[float] = []
        self.files: dict[str, tuple] = {}  # model -> its folder's files at the last look (none: first look)
        # model -> the files Triton refused to load (a later export's): not tried again until they change
        self.refused: dict[str, tuple] = {}
        self.echo = False  # the server's log echoed (nada-serve --verbose), after a restart too
        self.skip_unloadable = skip_unloadable

    def _client(self):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.server.endpoints.grpc)

    def _index(self, client) -> list[dict]:
        """Every model of the repository with its state (READY, LOADING, UNLOADING, UNAVAILABLE)."""
        return client.get_model_repository_index(
            headers=self.server.control_headers, as_json=True, client_timeout=CALL_TIMEOUT_S
        ).get("models", [])

    def short_of_processes(self, client, index: list[dict]) -> list[str]:
        """The models Triton has READY whose live stub processes are fewer than their configs ask for."""
        live = Counter(s.model for s in stub_processes(self.server.process.pid).values())
        short = []
        for model in sorted(m["name"] for m in index if m.get("state") == "READY"):
            if model not in self.instances:
                config = client.get_model_config(model, as_json=True, client_timeout=CALL_TIMEOUT_S)
                self.instances[model] = python_instances(config["config"])
            if live[model] < self.instances[model]:
                short.append(model)
        return short

    def watch(self, stop: threading.Event) -> None:
        """Look every `interval` seconds until `stop` is set. What a look cannot mend (a model that
        cannot be reloaded, a server that keeps dying or stops answering) is raised: the caller stops
        serving and says why, rather than serve a repository nobody watches."""
        while not stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One look: restart a dead server, reload each model short of a process, load again a
        model left unavailable (every model of the repository was loaded at the start)."""
        if self.server.process.poll() is not None:
            self.restart_server()
            return
        try:
            client = self._client()
            index = self._index(client)
            for model in self.short_of_processes(client, index):
                self.reload(model)
            loaded = self.load_changed(client)
            for model in sorted(
                m["name"]
                for m in index
                if m.get("state") == "UNAVAILABLE"
                and m["name"] not in loaded
                and not self._refused_as_it_is(m["name"])
            ):
                t0 = time.monotonic()
                self._load(client, model, t0 + self.start_timeout)
                self._event(model, "it was unavailable", "loaded again", time.monotonic() - t0)
        except Exception:
            # a tritonserver killed outright takes its model processes with it, and may be seen
            # without them (or not answering) a moment before it is seen dead: then it is the server to restart
            if not self._server_gone(within=5.0):
                raise
            self.restart_server()

    def _refused_as_it_is(self, model: str) -> bool:
        """Triton refused to load the model's files as they are now (a later export's)."""
        return model in self.refused and self.refused[model] == self.files.get(model)

    def refused_now(self) -> set[str]:
        """The models whose files in the repository are ones Triton refused to load."""
        return {model for model in self.refused if self._refused_as_it_is(model)}

    def load_changed(self, client=None) -> list[str]:
        """Load the models whose folders a new export changed or added since the last look (a look
        does; an exporter that holds the watch calls it at once); those loaded."""
        client = client or self._client()
        try:
            found = repository_files(self.server.repository)
        except OSError:  # a folder gone between listing and reading: an export's swap; the next look sees it
            return []
        changed = sorted(n for n, f in found.items() if self.files and self.files.get(n) != f)
        self.files = found
        if not changed:
            return []
        # what a start left out is tried again once the refused models it waits for have changed
        left_out = self.server.not_loaded - loadable(self.server.repository, self.refused_now())[1]
        loaded = []
        ready_before = {m["name"] for m in self._index(client) if m.get("state") == "READY"}
        # composing models first: an ensemble is checked against its members when it loads
        for model in sorted(
            set(changed) | left_out, key=lambda n: (is_ensemble(self.server.repository / n), n)
        ):
            t0 = time.monotonic()
            self.instances.pop(model, None)  # its config may ask for other instances now
            try:
                self._load(
                    client, model, t0 + CHANGED_LOAD_RETRY_S, f"loaded in {CHANGED_LOAD_RETRY_S:.0f} s"
                )
            except NadaError as e:  # the rest of the repository keeps serving: nothing to give up
                if model in changed:  # its own files refused (a model left out may wait on another's)
                    self.refused[model] = found[model]
                kept = "the version loaded before keeps serving" if model in ready_before else "not served"
                self.log(f"nada-serve: {now()} {one_line(str(e))}; {kept} until an export changes it again")
                continue
            self.refused.pop(model, None)
            self.server.not_loaded.discard(model)
            loaded.append(model)
            cause = (
                "a new export changed it in the repository"
                if model in changed
                else "left out when the server started"
            )
            self._event(model, cause, "loaded", time.monotonic() - t0)
        return loaded

    def _server_gone(self, within: float) -> bool:
        try:
            self.server.process.wait(within)
            return True
        except subprocess.TimeoutExpired:
            return False

    def reload(self, model: str) -> None:
        """Unload `model` (readiness says not ready from here on) and load it again at once: the
        unload of a model whose process is dead never finishes, Triton loads the new copy beside it.
        Then load whatever Triton left unavailable: an ensemble whose unload (it drains its requests
        first) finished after its member's load would otherwise stay unloaded for good. One that
        finishes later still is found by the next look."""
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        client, headers = self._client(), self.server.control_headers
        client.unload_model(model, headers=headers, client_timeout=self.start_timeout)
        self._load(client, model, deadline)
        also: set[str] = set()
        while True:
            index = self._index(client)
            left = sorted(m["name"] for m in index if m.get("state") == "UNAVAILABLE")
            for name in left:
                also.add(name)
                self._load(client, name, deadline)
            if not left and not not_ready(index):
                break
            if time.monotonic() > deadline:
                raise NadaError(
                    f"{model}: could not be reloaded in {self.start_timeout:.0f} s: not ready: {not_ready(index)}"
                )
            time.sleep(0.1)
        listed = "".join(f" (and {name})" for name in sorted(also - {model}))
        self._event(model, "its python-backend process died", f"reloaded{listed}", time.monotonic() - t0)

    def _load(self, client, model: str, deadline: float, within: str = "") -> None:
        """load_model, retried each second until `deadline`; the first failure is logged, so a
        reload that takes long says why. Not retried once the server has died: `check` starts it
        again (retrying a dead server's port would wait out the deadline and then give up)."""
        logged = False
        while True:
            try:
                client.load_model(
                    model, headers=self.server.control_headers, client_timeout=self.start_timeout
                )
                return
            except Exception as e:
                if self.server.process.poll() is not None:
                    raise  # the server died (it may while a model reloads): the look restarts it
                if time.monotonic() > deadline:
                    within = within or f"reloaded in {self.start_timeout:.0f} s"
                    raise NadaError(f"{model}: could not be {within}: {e}") from None
                if not logged:
                    self.log(f"nada-serve: {now()} {model}: loading failed ({e}); retrying each second")
                    logged = True
                time.sleep(1.0)

    def start(self, echo: bool = False) -> None:
        """Start the server and wait until every model is ready. One that crashes while loading (killed
        by a signal) is started again, counted as a restart: Triton's python backend aborts now and then
        on a busy machine, more often in the minute after a model process was killed. One that exits on
        its own (a model that fails to load) or is not ready in time is refused as it is."""
        self.echo = echo
        while True:
            try:
                self.server.start(timeout=self.start_timeout, echo=echo)
                return
            except ServerCrashed:
                status = self.server.process.returncode
                self._count_death(status, time.monotonic())
                self.log(
                    f"nada-serve: {now()} tritonserver: exited with status {status} while loading; starting it again"
                )
            except NadaError:
                if not self.skip_unloadable:
                    raise
                failed = {
                    name: why
                    for name, why in self.server.failed_to_load().items()
                    if name not in self.server.left_out
                }
                if not failed:  # not a model it could not load: nothing to leave out
                    raise
                self._leave_out(failed)

    def _leave_out(self, models: dict[str, str]) -> None:
        """Start without `models`, which tritonserver could not load (the export that changes them
        brings them back: they are among the server's not_loaded). Their files count as refused, so a
        restart leaves them out at once rather than after another failed start."""
        found = repository_files(self.server.repository)
        self.files = self.files or found  # the first look then sees no change
        self.refused.update({model: found.get(model) for model in models})
        self.server.left_out |= set(models)
        for model, why in sorted(models.items()):
            self.log(
                f"nada-serve: {now()} {model}: tritonserver could not load it ({why or 'its log says why'}); "
                "starting without it and the ensembles that use it, until an export changes it"
            )

    def restart_server(self) -> None:
        t0 = time.monotonic()
        status = self.server.process.returncode
        self._count_death(status, t0)
        # the models Triton refused are not on disk as it served them: started with them the server
        # would exit (it does on a model it cannot load), so it starts without them
        self.server.left_out = self.refused_now()
        self.start(self.echo)
        without = sorted(self.server.not_loaded)
        self._event(
            "tritonserver",
            f"exited with status {status}",
            "restarted on the same ports"
            + (
                f" without {', '.join(without)} (files Triton refused, or models that use them)"
                if without
                else ""
            ),
            time.monotonic() - t0,
        )

    def _count_death(self, status: int | None, at: float) -> None:
        """One more death of the server at `at`; more than max_restarts within the window: give up."""
        self.restarts = [t for t in self.restarts if at - t < self.restart_window_s] + [at]
        if len(self.restarts) > self.max_restarts:
            raise NadaError(
                f"tritonserver died {len(self.restarts)} times in {self.restart_window_s:.0f} s "
                f"(last status {status}); giving up:\n{self.server.errors()}"
            )

    def _event(self, subject: str, cause: str, action: str, seconds: float) -> None:
        self.log(f"nada-serve: {now()} {subject}: {cause}; {action} in {seconds:.1f} s")
