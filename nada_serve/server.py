"""Start and stop the tritonserver that nvidia-pytriton bundles (python backend only), on 127.0.0.1 by default.

The bundled binary needs three things a plain launch lacks (see environment notes):
1. the python-backend stub for the running Python beside libtriton_python.so: we assemble a private
   backend folder instead of writing into site-packages;
2. this interpreter's bin folder first on PATH (the stub finds site-packages through it);
3. LD_LIBRARY_PATH with this interpreter's libpython folder, so no other libpython is mixed in,
   and with nvidia_pytriton.libs, which the stub's relative rpath finds only from its own folder.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from threading import Thread

from nada_core.cache import cache_dir
from nada_core.errors import FieldError, NadaError

STUB_NAME = "triton_python_backend_stub"
SHM_FOLDER = "/dev/shm"  # where POSIX shared memory lives on Linux


class ServerCrashed(NadaError):
    """tritonserver killed by a signal while loading (nobody asked it to stop): a crash, such as the
    python backend's abort on a shared-memory lock that Triton shows now and then on a loaded machine,
    not a model that failed to load (that exits with a status of its own). Worth starting again."""


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PICKED_PORT = 10000  # below this lie many services' well-known ports


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel hands out for outgoing connections and bind(0) (Linux's default when unknown)."""
    try:
        low, high = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bound_port(host: str, port: int) -> int:
    """Bind `port` (0: any ephemeral one) on `host` and let it go; the port it got."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, port))
        return s.getsockname()[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, below the kernel's ephemeral range where one exists: a port from
    bind(0) is an ephemeral one, which any process's next outgoing connection (a gRPC client's, say) may
    take before our server binds it; below the range only another server picking at random can."""
    low, _ = ephemeral_ports()
    rng = secrets.SystemRandom()
    for _ in range(64 if low - LOWEST_PICKED_PORT >= 1000 else 0):
        try:
            return _bound_port(host, rng.randrange(LOWEST_PICKED_PORT, low))
        except OSError:  # taken (or nothing can listen on host: the kernel's pick below says so)
            pass
    return _bound_port(host, 0)


def pytriton_root() -> Path:
    try:
        import pytriton  # noqa: PLC0415
    except ImportError:
        raise NadaError(
            "nvidia-pytriton is not installed (it bundles tritonserver): pip install 'nada[serve]'"
        ) from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise NadaError(f"no tritonserver binary under {root}; reinstall nvidia-pytriton")
    return root


def backend_directory() -> Path:
    """A backends folder whose python/ holds the python backend and the stub for this Python: made
    once per pytriton build (its files' sizes and times name the folder) and reused. It is made in a
    folder of its own and renamed into place whole, so that two servers started at once never write a
    library the other has already loaded (two test workers starting their first servers together did:
    a suspect in tritonserver aborting while loading, which went on less often, not never)."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / STUB_NAME
    if not stub.exists():
        raise NadaError(f"nvidia-pytriton has no python-backend stub for Python {version}")
    sources = [
        root / "backends" / "python" / f for f in ("libtriton_python.so", "triton_python_backend_utils.py")
    ]
    sources.append(stub)
    build = hashlib.sha256(repr([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sources]).encode())
    final = cache_dir(f"triton-backends-py{version}-{build.hexdigest()[:12]}")
    if (final / "python" / STUB_NAME).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".triton-backends-", dir=final.parent))
    try:
        (work / "python").mkdir()
        for f in sources:
            shutil.copy2(f, work / "python" / f.name)
        os.rename(work, final)
    except OSError:
        if not (final / "python" / STUB_NAME).exists():  # not another process that got there first
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already where the rename succeeded
    return final


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    bundled = pytriton_root().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [libdir, str(bundled), env.get("LD_LIBRARY_PATH", "")])
    )
    return env


def not_ready(index: list[dict]) -> str:
    """The models of a repository index that are not READY, each with its state and Triton's reason."""
    return ", ".join(
        f"{m['name']} {m.get('state', '?')} {m.get('reason', '')}".rstrip()
        for m in index
        if m.get("state") != "READY"
    )


def ensemble_steps(config: str) -> set[str]:
    """The models an ensemble's config.pbtxt calls in its steps (none for other models)."""
    return set(re.findall(r'model_name:\s*"([^"]+)"', config))


def loadable(repository: Path, left_out: set[str]) -> tuple[list[str], set[str]]:
    """The repository's models but those left out and the ensembles that step on them (loading an
    ensemble loads its steps' models), and every model that is not loaded."""
    configs = {p.parent.name: p.read_text() for p in repository.glob("*/config.pbtxt")}
    out = set(left_out) & set(configs)
    while more := {n for n, c in configs.items() if n not in out and ensemble_steps(c) & out}:
        out |= more
    return sorted(set(configs) - out), out


@dataclass
class Endpoints:
    grpc: str
    http: str
    metrics: str


# Model loading and the repository index answer only requests carrying the server's token in this
# header (over gRPC Triton expects it prefixed with triton-grpc-protocol-).
CONTROL_HEADER = "nada-control"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class TritonServer:
    """A tritonserver process serving one model repository on `host` (127.0.0.1 unless asked).

    Models are loaded under explicit model control so that a broken one can be reloaded; that API
    (and the repository index) is restricted to requests carrying a token only this object knows."""

    def __init__(
        self,
        repository: str | Path,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_verbose: int = 0,
        host: str = "127.0.0.1",
    ):
        self.repository = Path(repository)
        if not self.repository.is_dir():
            raise NadaError(f"model repository '{repository}' is not a directory; write one with nada-export")
        self.host = host
        bind = "127.0.0.1" if is_loopback(host) else host
        self._bind = bind
        self._asked_ports = (grpc_port, http_port, metrics_port)  # 0: ours to pick
        try:
            _bound_port(bind, 0)  # can we listen there at all?
            self.ports = self._pick_ports()
        except OSError as e:
            raise FieldError(
                f"{{host}} {host}: cannot listen there ({e.strerror or e}); use 127.0.0.1, 0.0.0.0 or an "
                "address of this machine"
            ) from None
        self._ready_once = False  # until then nobody knows the ports: a taken one may be picked again
        self.log_verbose = log_verbose
        self.process: subprocess.Popen | None = None
        self._ended: int | None = None  # the exited server whose session was ended
        self.log_lines: deque[str] = deque(maxlen=400)
        self.endpoints_started: set[str] = set()  # those the running server said it listens on
        self.control_token = secrets.token_hex(16)
        # models not to load at the next start (those whose files Triton refused, with the ensembles
        # that use them): the rest serve rather than none (the server exits on a model it cannot load)
        self.left_out: set[str] = set()
        self.not_loaded: set[str] = set()  # what the running server was started without
        # this server's python-backend shared memory (/dev/shm) by name: what a killed server leaves
        # there (a megabyte or more per model process, in RAM) is removed with its processes
        self.shm_prefix = f"nada_{secrets.token_hex(6)}_"

    @property
    def endpoints(self) -> Endpoints:
        g, h, m = self.ports
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else self.host
        host = f"[{host}]" if ":" in host else host
        return Endpoints(f"{host}:{g}", f"{host}:{h}", f"{host}:{m}")

    @property
    def control_headers(self) -> dict[str, str]:
        """gRPC metadata that admits model control and the repository index."""
        return {f"triton-grpc-protocol-{CONTROL_HEADER}": self.control_token}

    def command(self) -> list[str]:
        g, h, m = self.ports
        token = self.control_token
        loaded, self.not_loaded = loadable(self.repository, self.left_out) if self.left_out else ([], set())
        return [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={backend_directory()}",
            f"--grpc-address={self.host}",
            f"--grpc-port={g}",
            f"--http-address={self.host}",
            f"--http-port={h}",
            f"--metrics-address={self.host}",
            f"--metrics-port={m}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            "--exit-timeout-secs=10",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--model-control-mode=explicit",
            *([f"--load-model={name}" for name in loaded] if self.left_out else ["--load-model=*"]),
            f"--grpc-restricted-protocol=model-repository:{CONTROL_HEADER}={token}",
            f"--http-restricted-api=model-repository:{CONTROL_HEADER}={token}",
        ]

    def _pick_ports(self) -> tuple[int, int, int]:
        return tuple(asked or free_port(self._bind) for asked in self._asked_ports)

    def _picked_port_taken(self) -> bool:
        """Did the server exit because a port we picked (not one the caller asked for) was taken?"""
        taken = {int(port) for port in re.findall(r":(\d+)' already in use", "\n".join(self.log_lines))}
        return any(port in taken for port, asked in zip(self.ports, self._asked_ports) if not asked)

    PORT_TRIES = 3

    def start(self, timeout: float = 120.0, echo: bool = False) -> TritonServer:
        """Start and wait until every model is ready. A port we picked may be taken by another process
        between the pick and the server's bind: before the first ready (nobody knows the ports yet) the
        server is started again on newly picked ports; ports the caller asked for are never changed."""
        tries = 1
        while True:
            try:
                self._start_once(timeout, echo)
            except NadaError:
                if self._ready_once or tries == self.PORT_TRIES or not self._picked_port_taken():
                    raise
                tries += 1
                self.ports = self._pick_ports()
                self.log_lines.clear()
                continue
            self._ready_once = True
            return self

    def _start_once(self, timeout: float, echo: bool) -> None:
        self._end_leftovers()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=server_environment(),
            cwd=tempfile.gettempdir(),
            start_new_session=True,
        )
        self.endpoints_started = set()  # this process's own: a pump of an earlier one never adds to it
        Thread(target=self._pump, args=(self.process, self.endpoints_started, echo), daemon=True).start()
        self.wait_ready(timeout)

    # What tritonserver logs once it listens on each endpoint; it starts them after loading the models,
    # one after another, and exits if one cannot bind: models ready over gRPC while the HTTP port turns
    # out taken is a server about to exit, not a ready one.
    STARTED = {
        "grpc": '"Started GRPCInferenceService at ',
        "http": '"Started HTTPService at ',
        "metrics": '"Started Metrics Service at ',
    }

    def _pump(self, process: subprocess.Popen, started: set[str], echo: bool) -> None:
        assert process.stdout
        for line in process.stdout:
            self.log_lines.append(line.rstrip())
            started.update(name for name, said in self.STARTED.items() if said in line)
            if echo:
                print(line, end="", flush=True)

    # Lines every CPU-only start prints; not the reason anything failed.
    BENIGN = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA memory pool")

    def errors(self) -> str:
        """The server's own words on what failed: the 'failed to load' lines and its final error."""
        lines = [line for line in self.log_lines if not any(b in line for b in self.BENIGN)]
        picked = [line for line in lines if "failed to load" in line or line.startswith("error:")]
        if not picked:
            picked = [line for line in lines if line[:1] == "E" or "error" in line.lower()][-8:] or lines[-8:]
        return "\n".join(line if len(line) < 400 else line[:400] + " ..." for line in picked)

    # tritonserver's line for a model it could not load: "failed to load 'NAME' version N: REASON\n..."
    # (its newlines written as \n), then "failed to load 'NAME'" without a reason
    FAILED_TO_LOAD = re.compile(r"failed to load '([^']+)'(?: version \d+: (.*?)(?:\\n|\"$))?")

    def failed_to_load(self) -> dict[str, str]:
        """The models the server's log says it failed to load, each with the first line of its reason."""
        failed: dict[str, str] = {}
        for line in self.log_lines:
            for name, reason in self.FAILED_TO_LOAD.findall(line):
                failed[name] = reason or failed.get(name, "")
        return failed

    def _refused_models(self) -> str:
        """The models the server's log says it failed to load, and what to do, for the first line."""
        failed = sorted(self.failed_to_load())
        if not failed:
            return ""
        it, its = ("it", "its folder") if len(failed) == 1 else ("them", "their folders")
        return f"; it could not load {', '.join(failed)}: export {it} again, or remove {its}"

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(self.endpoints.grpc)
        index: list[dict] = []
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the pump read the last lines
                died = ServerCrashed if self.process.returncode < 0 else NadaError
                raise died(
                    f"tritonserver exited with status {self.process.returncode} while loading "
                    f"{self.repository}{self._refused_models()}:\n{self.errors()}"
                )
            try:
                # a deadline on each call: a port held by another process may accept and never answer,
                # and without one gRPC waits 20 s to connect while our server has already exited
                if client.is_server_ready(client_timeout=2.0):
                    index = client.get_model_repository_index(
                        headers=self.control_headers, as_json=True, client_timeout=2.0
                    ).get("models", [])
                    index = [m for m in index if m["name"] not in self.not_loaded]
                    every_model = (index or self.not_loaded) and all(m.get("state") == "READY" for m in index)
                    if every_model and self.endpoints_started == set(self.STARTED):
                        return
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        self.stop()
        silent = [name for name in self.STARTED if name not in self.endpoints_started]
        waiting = (
            not_ready(index)
            or (index and silent and f"its {' and '.join(silent)} endpoints")
            or "the server itself"
        )
        raise NadaError(
            f"tritonserver was not ready after {timeout:.0f} s (not ready: {waiting}):\n{self.errors()}"
        )

    def models(self) -> list[dict]:
        import tritonclient.grpc as grpcclient

        return (
            grpcclient.InferenceServerClient(self.endpoints.grpc)
            .get_model_repository_index(headers=self.control_headers, as_json=True)
            .get("models", [])
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._end_leftovers()
        return self.process.returncode

    def _end_leftovers(self) -> None:
        """Kill what is left of an exited server's session: a model process whose tritonserver died
        (kill -9, a crash) is left to init and may never exit (seen here: still running after minutes).
        Then remove its shared memory: a killed server's stays in /dev/shm (RAM) until reboot."""
        if self.process is None or self.process.poll() is None or self._ended == self.process.pid:
            return
        self._ended = self.process.pid  # once, at once: later its number may name another session
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # nothing left: the usual case
            pass
        for region in Path(SHM_FOLDER).glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)  # still mapped by a dying process: freed when it exits

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
