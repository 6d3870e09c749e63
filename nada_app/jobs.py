"""Trainings queued from many pages, run one at a time in a worker thread.

A page must not block while a run trains, and two people must not train at once on one machine (each
would get half of it) nor see or stop each other's runs. So each submission becomes a Job owned by the
page that made it, with a run directory of its own under the queue's folder; one worker thread runs the
jobs in order through nada.adapt / nada.resume, and the pages poll the job for its progress.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from nada_app.words import in_page_words
from nada_core.cli import one_line
from nada_core.errors import FieldError, NadaError, TrainingInterrupted
from nada_train.many import folder_names

STATUSES = ("queued", "running", "finished", "stopped", "failed")


@dataclass
class Job:
    """One training asked for by one page (its `owner`), and where it stands."""

    id: str
    owner: str
    target: str
    out: Path
    settings: dict  # nada.adapt's arguments besides target and out
    status: str = "queued"  # one of STATUSES
    step: int = 0
    iterations: int = 0
    loss: float | None = None
    sample: Path | None = None  # the newest sample grid (frozen row above adapted row)
    error: str = ""  # one line, when failed
    resume: bool = False  # continue `out` instead of starting it
    stop_requested: bool = False
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "failed")

    def line(self) -> str:
        """Where the job stands, in one line for the page."""
        if self.status == "queued":
            return f"{self.target}: queued"
        if self.status == "failed":
            return f"{self.target}: failed: {self.error}"
        loss = "" if self.loss is None else f", loss {self.loss:.4f}"
        of = f" of {self.iterations}" if self.iterations else ""
        return f"{self.target}: {self.status}, step {self.step}{of}{loss}"


class StopRequested(KeyboardInterrupt):
    """Raised from the progress callback: the loop saves a resumable state, as on Ctrl-C."""


class TrainingQueue:
    """Jobs run one at a time, in submission order, by one worker thread; each in `root`/NAME.

    adapt and resume are nada.adapt and nada.resume unless given (the tests give their own)."""

    def __init__(self, root: str | Path, adapt=None, resume=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if adapt is None or resume is None:
            import nada

            adapt, resume = adapt or nada.adapt, resume or nada.resume
        self._adapt, self._resume = adapt, resume
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._worker = threading.Thread(target=self._work, name="nada-app-training", daemon=True)
        self._worker.start()

    # ---- what pages call -----------------------------------------------------------------------
    def submit(self, owner: str, target: str, iterations: int | None = None, **settings) -> Job:
        """Queue a new run of `target` for `owner` (iterations None: the base's default); settings:
        nada.adapt's (base, source, clip, layers, ...)."""
        target = " ".join((target or "").split())
        if not target and not settings.get("target_images"):
            raise FieldError(
                "{target}: type the new domain's text (e.g. 'pencil sketch') or drop style images"
            )
        if iterations is not None and int(iterations) < 1:
            raise FieldError(f"{{iterations}} {iterations}: train for at least 1 iteration")
        with self._lock:
            out = self._free_folder(folder_names([target or "images"])[0])
            if iterations is not None:
                settings["iterations"] = int(iterations)
            job = Job(f"job{next(self._ids)}", owner, target or "style images", out, settings)
            job.iterations = int(iterations or 0)
            self._jobs[job.id] = job
        self._pending.put(job)
        return job

    def stop(self, job_id: str, owner: str) -> Job:
        """Ask `owner`'s job to stop: a queued one never starts, a running one saves where it is."""
        job = self.job(job_id, owner)
        job.stop_requested = True
        return job

    def resume(self, job_id: str, owner: str) -> Job:
        """Queue a stopped job again: it continues from its saved state (bit for bit as if never stopped)."""
        job = self.job(job_id, owner)
        if job.status != "stopped" or job.step == 0:
            raise FieldError(f"{{job}} {job.target}: only a run stopped after its first step can be resumed")
        job.status, job.stop_requested, job.resume = "queued", False, True
        job.queued_at = time.monotonic()
        self._pending.put(job)
        return job

    def job(self, job_id: str, owner: str) -> Job:
        """`owner`'s job; another page's is refused as if it did not exist."""
        found = self._jobs.get(job_id)
        if found is None or found.owner != owner:
            raise FieldError(f"{{job}} {job_id}: no such job of this page")
        return found

    def jobs_of(self, owner: str) -> list[Job]:
        return [j for j in self._jobs.values() if j.owner == owner]

    def ahead_of(self, job: Job) -> int:
        """How many jobs (anyone's) run before this queued one."""
        return sum(
            1
            for j in self._jobs.values()
            if j is not job
            and (j.status == "running" or (j.status == "queued" and j.queued_at < job.queued_at))
        )

    def close(self, timeout: float = 60.0) -> None:
        """Stop every job (the running one saves its state) and end the worker."""
        for j in self._jobs.values():
            j.stop_requested = True
        self._pending.put(None)
        self._worker.join(timeout)

    # ---- the worker ----------------------------------------------------------------------------
    def _free_folder(self, name: str) -> Path:
        taken = {j.out for j in self._jobs.values()}
        for n in itertools.count(1):
            out = self.root / (name if n == 1 else f"{name}-{n}")
            if not out.exists() and out not in taken:
                return out
        raise AssertionError("unreachable")

    def _work(self) -> None:
        while (job := self._pending.get()) is not None:
            if job.stop_requested:
                job.status = "stopped"
                continue
            job.status = "running"
            try:
                self._run(job)
                job.status = "finished"
            except TrainingInterrupted:
                job.status = "stopped"
            except NadaError as exc:  # bad input: its own one-line message names the field
                job.status, job.error = "failed", in_page_words(exc)
            except Exception as exc:  # noqa: BLE001 - the page gets one line, the operator the trace
                traceback.print_exc(file=sys.stderr)
                job.status, job.error = "failed", one_line(f"{type(exc).__name__}: {exc}")

    def _run(self, job: Job) -> None:
        def heard(progress) -> None:
            job.step, job.iterations, job.loss = progress.step, progress.iterations, progress.loss
            if progress.sample is not None:
                job.sample = progress.sample
            if job.stop_requested:
                raise StopRequested

        if job.resume:
            self._resume(job.out, progress=False, callback=heard)
        else:
            self._adapt(
                job.settings.get("base"),
                job.target if not job.settings.get("target_images") else None,
                out=job.out,
                progress=False,
                callback=heard,
                **{k: v for k, v in job.settings.items() if k != "base"},
            )
