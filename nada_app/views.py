"""What the page shows, as plain functions over nada's API (no web library here): finished runs side by
side, a photo in every domain, and images fetched from a Triton server that serves the runs."""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nada_core.cli import one_line
from nada_core.errors import FieldError, NadaError
from nada_core.pngs import grid
from nada_core.seeds import parse_seeds

MAX_SEEDS = 16


def finished_runs(root: Path) -> list[Path]:
    """The finished run directories in `root` (a page's gallery), newest first."""
    import nada

    found = []
    for manifest in root.glob("*/manifest.json"):
        try:
            if nada.Run(manifest.parent).status == "finished":
                found.append(manifest.parent)
        except Exception:  # noqa: BLE001 - a folder being written or not a run: not listed
            continue
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class Generators:
    """Loaded generators by run path, reloaded when the run's manifest changes (a resumed run)."""

    def __init__(self):
        self._loaded: dict[Path, tuple[float, object]] = {}
        self._lock = threading.Lock()  # pages call at once: each run is loaded once

    def get(self, run: Path):
        from nada_train.checkpoints import load_generator

        with self._lock:
            stamp = (run / "manifest.json").stat().st_mtime if (run / "manifest.json").exists() else 0.0
            held = self._loaded.get(run)
            if held is None or held[0] != stamp:
                held = (stamp, load_generator(run, "cpu"))
                self._loaded[run] = held
            return held[1]


def chosen(runs: list[str] | None, root: Path) -> list[Path]:
    if not runs:
        raise FieldError("{runs}: tick at least one finished run")
    paths = [root / r for r in runs]
    missing = [str(p.name) for p in paths if not (p / "manifest.json").exists()]
    if missing:
        raise FieldError(f"{{runs}} {', '.join(missing)}: no such run any more; refresh the list")
    return paths


def seed_list(seeds: str) -> list[int]:
    values = parse_seeds(str(seeds))
    if len(values) > MAX_SEEDS:
        raise FieldError(f"{{seeds}} {seeds}: at most {MAX_SEEDS} seeds at once")
    return values


def side_by_side(
    runs: list[Path], seeds: str, truncation: float, generators: Generators
) -> tuple[np.ndarray, list[str]]:
    """One row per domain (the runs' base first), one column per seed: the same seed in every domain."""
    from nada_train.edit import one_base

    values = seed_list(seeds)
    loaded = [generators.get(r) for r in runs]
    rows, labels = [], []
    try:
        base = one_base(loaded, [r.name for r in runs])
        rows.append(base.generate(values, truncation))
        labels.append(f"base ({Path(base.source).name})")
    except FieldError:  # runs of different bases: each run's row alone
        pass
    for run, g in zip(runs, loaded):
        rows.append(g.generate(values, truncation))
        labels.append(run.name)
    return grid(np.concatenate(rows), rows=len(rows)), labels


@dataclass
class PhotoResult:
    grid: np.ndarray  # one row: the photo as inverted, its reconstruction, then each domain
    labels: list[str]
    psnr_db: float
    inverted_by: str
    png: Path  # the grid as a PNG, to download


def photo_in_domains(
    photo: str | Path,
    runs: list[Path],
    generators: Generators,
    out: Path,
    align: bool = False,
    shape_predictor: Path | None = None,
    projection_steps: int = 100,
) -> PhotoResult:
    """The photo inverted into the runs' base (by the base's own encoder where it ships one, else by
    projection) and drawn in every run's domain; the grid's PNG in a folder of its own under `out`
    (two pages drawing at once never share a file)."""
    import nada
    from nada_core.pngs import save_png
    from nada_train.alignment import read_photos
    from nada_train.bases import base_owning
    from nada_train.edit import edit, one_base
    from nada_train.encoders.loading import INPUT_SIZE

    if photo is None:
        raise FieldError("{photo}: drop a photo first")
    loaded = [generators.get(r) for r in runs]
    base = one_base(loaded, [r.name for r in runs])
    owner = base_owning(base.source)
    encoder = nada.load_encoder(owner.encoder) if owner is not None and owner.encoder is not None else None
    size = INPUT_SIZE if encoder is not None else base.config.image_shape[0]
    picture = read_photos([Path(photo)], size, align, shape_predictor)[0]
    if encoder is not None:
        (edited,) = edit([picture], loaded, base=base, encoder=encoder)
    else:
        (edited,) = edit([picture], loaded, base=base, steps=projection_steps)
    images = [edited.input, edited.reconstruction, *edited.domains.values()]
    mosaic = grid(np.stack(images), rows=1)
    out.mkdir(parents=True, exist_ok=True)
    png = Path(tempfile.mkdtemp(dir=out)) / "photo-in-every-domain.png"
    save_png(mosaic, png)
    labels = ["your photo", "reconstruction", *edited.domains]
    return PhotoResult(mosaic, labels, float(edited.psnr_db), edited.inverted_by, png)


class Serving:
    """The chosen runs exported to a Triton repository and served as nada-serve serves it (tritonserver
    on 127.0.0.1, free ports, its supervisor reloading a model whose process dies), for the page to fetch
    images over gRPC. Every export adds to the one repository: while its server runs, the models an
    export adds or changes are loaded into it, and those of earlier exports (another page's) stay
    served; no restart."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.server = None
        self.supervisor = None
        self.models: list[str] = []  # every model served, whichever export wrote it
        self.exported: list[str] = []  # the last export's
        self.stopped_because = ""  # what the supervisor could not mend, for the next fetch to say
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # one export at a time, whichever page asks
        self._swap = threading.Lock()  # the server's replacement, against a watch that gives up

    @property
    def repository(self) -> Path:
        return self.folder / "triton_models"

    def start(self, runs: list[Path], engine: str = "onnx") -> str:
        with self._lock:
            return self._start(runs, engine)

    def _start(self, runs: list[Path], engine: str) -> str:
        import nada

        self._pause_watch()  # no look while the export swaps the repository: the loads below are ours
        try:
            t0 = time.perf_counter()
            report = nada.export(runs, self.repository, engine=engine, max_batch=8, progress=False)
            exported_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            if self.server is not None and self.server.process.poll() is None:
                self.supervisor.load_changed()
                where = f"loaded into the running tritonserver in {time.perf_counter() - t0:.1f} s"
            else:
                self._serve()
                where = (
                    f"tritonserver ready on {self.server.endpoints.grpc} in {time.perf_counter() - t0:.1f} s"
                )
            server = self.server  # the watch may stop it from here on: then asking it fails in one line
            # a refused new version of a model served before: Triton serves the earlier one still
            earlier = self.supervisor.refused_now()
        finally:
            self._watch_in_background()
        ready = {m["name"] for m in server.models() if m.get("state") == "READY"}
        self.exported = [m for m in report.models if m in ready and m not in earlier]
        self.models = [m for m in served_models(self.repository) if m in ready]
        refused = [m for m in report.models if m not in self.exported]
        if not self.exported:
            raise NadaError(
                f"tritonserver refused to load {', '.join(refused)}; its words are on the terminal"
            )
        words = f"exported {len(report.models)} model(s) ({engine}) in {exported_s:.1f} s; {where}"
        if not_served := [m for m in refused if m not in ready]:
            words += f"; not served: {', '.join(not_served)} (tritonserver refused it; its words are on the terminal)"
        if kept := [m for m in refused if m in ready]:
            words += (
                f"; {', '.join(kept)}: tritonserver refused the new export and serves the earlier one "
                "(its words are on the terminal)"
            )
        return words

    def _serve(self) -> None:
        """A new tritonserver on the repository in place of any earlier one, every model ready that it
        can load: one it cannot (a broken export) is left out and named, as a later export's would be."""
        from nada_serve.server import TritonServer
        from nada_serve.supervisor import Supervisor

        self._stop_server()
        server = TritonServer(self.repository, 0, 0, 0, host="127.0.0.1")
        supervisor = Supervisor(
            server, log=lambda line: print(line, file=sys.stderr, flush=True), skip_unloadable=True
        )
        supervisor.start()
        supervisor.check()  # also records the repository's files: the next export's changes are loaded
        with self._swap:
            self.server, self.supervisor = server, supervisor  # only once it serves
            self.stopped_because = ""

    def _pause_watch(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()  # the watch takes only _swap, never _lock: no wait on us
            self._watcher = None

    def _watch_in_background(self) -> None:
        if self.server is None:
            return
        self._stop = threading.Event()
        self._watcher = threading.Thread(
            target=self._supervise, args=(self.supervisor, self._stop), daemon=True
        )
        self._watcher.start()

    def fetch(self, model: str, seeds: str, truncation: float, repeats: int = 5) -> tuple[np.ndarray, str]:
        """The seeds' images as the server draws them, and the latency of that request (median of
        `repeats` after one warm-up)."""
        server, models = self.server, self.models
        if server is None:
            if self.stopped_because:
                raise FieldError(
                    f"{{serve}}: serving stopped ({self.stopped_because}); export and serve again"
                )
            raise FieldError("{serve}: export and serve the runs first")
        if model not in models:
            raise FieldError(f"{{model}} {model}: not served; pick one of {', '.join(models)}")
        from nada_serve.client import GeneratorClient

        values = seed_list(seeds)
        with GeneratorClient(server.endpoints.grpc, model) as client:
            images = client.generate(values, truncation)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                client.generate(values, truncation)
                times.append(time.perf_counter() - t0)
        ms = 1000 * statistics.median(times)
        words = f"{len(values)} image(s) over gRPC from '{model}': {ms:.1f} ms (p50 of {repeats})"
        return grid(images, rows=1), words

    def _supervise(self, supervisor, stop: threading.Event) -> None:
        """The supervisor's watch, on its own thread; what it cannot mend stops this server (not a newer
        one an export started meanwhile) and is said by the next fetch."""
        try:
            supervisor.watch(stop)
        except Exception as e:  # noqa: BLE001 - the page says it; the trace goes to the terminal
            traceback.print_exc(file=sys.stderr)
            with self._swap:
                if self.server is supervisor.server:
                    self.stopped_because = one_line(str(e))
                    self._stop_server()

    def stop(self) -> None:
        with self._lock:
            self._pause_watch()
            self._stop_server()

    def _stop_server(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()
            self.server = self.supervisor = None


def served_models(repository: Path) -> list[str]:
    """The models a person asks for by name (generators, domain models), of every export into the
    repository: its manifest's, in order."""
    import json

    manifest = repository / "manifest.json"
    return list(json.loads(manifest.read_text()).get("models", {})) if manifest.exists() else []
