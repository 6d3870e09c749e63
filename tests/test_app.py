"""nada-app's training queue (nada_app.jobs), in process: trainings run one at a time in submission
order in a worker thread, each page sees and stops only its own, a stopped run resumes to the very
run it would have been, and bad input fails its job in one line without stopping the queue."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import nada
from nada_app.jobs import TrainingQueue
from nada_core.errors import FieldError
from nada_train.many import folder_names
from nada_train.tensor_files import read_safetensors
from tests.conftest import wait_for, write_base_checkpoint

SETTINGS = dict(n_sample=2, sample_every=1, save_every=1, device="cpu", auto_layer_batch=2)


@pytest.fixture
def base(tmp_path):
    return write_base_checkpoint(tmp_path)


def make_queue(root, on_step=None):
    """A queue over the real nada.adapt/resume; on_step(progress) hears each step before the queue does."""
    events = []

    def adapt(*args, callback, out, **kwargs):
        def heard(progress):
            if on_step is not None:
                on_step(progress)
            callback(progress)

        events.append(("start", out.name, threading.get_ident()))
        try:
            return nada.adapt(*args, out=out, callback=heard, **kwargs)
        finally:
            events.append(("end", out.name, threading.get_ident()))

    return TrainingQueue(root, adapt=adapt, resume=nada.resume), events


def test_jobs_run_one_at_a_time_in_order_each_in_its_own_folder(tmp_path, base, tiny_clip_spec):
    queue, events = make_queue(tmp_path / "runs")
    common = dict(base=str(base), clip=[tiny_clip_spec], **SETTINGS)
    first = queue.submit("page-a", "pencil sketch", 2, **common)
    second = queue.submit("page-b", "pencil sketch", 2, **common)
    third = queue.submit("page-a", "neon", 2, **common)
    assert queue.ahead_of(third) == 2 or first.status != "queued"
    wait_for(lambda: all(j.done for j in (first, second, third)), 120, "three trainings")
    queue.close()
    assert [j.status for j in (first, second, third)] == ["finished"] * 3, [
        j.error for j in (first, second, third)
    ]
    # one at a time, in order, never on the page's thread
    assert [(e[0], e[1]) for e in events] == [
        ("start", "pencil-sketch"),
        ("end", "pencil-sketch"),
        ("start", "pencil-sketch-2"),
        ("end", "pencil-sketch-2"),
        ("start", "neon"),
        ("end", "neon"),
    ]
    assert {e[2] for e in events} != {threading.get_ident()}
    for job in (first, second, third):
        run = nada.Run(job.out)
        assert run.status == "finished" and run.iterations_done == 2
        assert job.step == job.iterations == 2 and job.sample == run.samples[-1]


def test_a_page_sees_and_stops_only_its_own_jobs(tmp_path, base, tiny_clip_spec):
    gate = threading.Event()
    queue, _ = make_queue(tmp_path / "runs", on_step=lambda p: gate.wait(30))
    job = queue.submit("page-a", "sketch", 3, base=str(base), clip=[tiny_clip_spec], **SETTINGS)
    try:
        assert queue.jobs_of("page-b") == []
        for call in (queue.stop, queue.resume, queue.job):
            with pytest.raises(FieldError, match="no such job of this page"):
                call(job.id, "page-b")
        assert not job.stop_requested
        assert queue.jobs_of("page-a") == [job]
    finally:
        gate.set()
        wait_for(lambda: job.done, 60, "the training")
        queue.close()
    assert job.status == "finished"


def test_stop_saves_the_run_and_resume_continues_it_to_the_straight_run(tmp_path, base, tiny_clip_spec):
    common = dict(base=str(base), **SETTINGS)
    stopper = {}
    queue, _ = make_queue(
        tmp_path / "runs", on_step=lambda p: p.step == 2 and queue.stop(stopper["job"].id, "page-a")
    )
    stopper["job"] = job = queue.submit("page-a", "sketch", 4, clip=[tiny_clip_spec], **common)
    wait_for(lambda: job.done, 60, "the stop")
    assert (job.status, job.step) == ("stopped", 2)
    assert nada.Run(job.out).status == "interrupted"
    queue.resume(job.id, "page-a")
    wait_for(lambda: job.done, 60, "the resumed training")
    straight = nada.adapt(
        target="sketch",
        out=tmp_path / "straight",
        iterations=4,
        progress=False,
        clip=[tiny_clip_spec],
        **common,
    )
    queue.close()
    assert (job.status, job.step) == ("finished", 4)
    _, resumed = read_safetensors(job.out / "generator.safetensors", "run")
    _, reference = read_safetensors(straight.path / "generator.safetensors", "run")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    with pytest.raises(FieldError, match="only a run stopped"):
        queue.resume(job.id, "page-a")


def test_a_queued_job_stopped_never_starts(tmp_path, base, tiny_clip_spec):
    gate = threading.Event()
    queue, events = make_queue(tmp_path / "runs", on_step=lambda p: gate.wait(30))
    common = dict(base=str(base), clip=[tiny_clip_spec], **SETTINGS)
    running = queue.submit("page-a", "sketch", 2, **common)
    waiting = queue.submit("page-b", "neon", 2, **common)
    assert queue.ahead_of(waiting) == 1
    queue.stop(waiting.id, "page-b")
    gate.set()
    wait_for(lambda: running.done and waiting.done, 60, "both jobs")
    queue.close()
    assert (running.status, waiting.status) == ("finished", "stopped")
    assert [e[1] for e in events] == ["sketch", "sketch"] and not waiting.out.exists()


def test_bad_input_fails_its_job_in_one_line_and_the_next_one_runs(tmp_path, base, tiny_clip_spec):
    queue, _ = make_queue(tmp_path / "runs")
    with pytest.raises(FieldError, match="target: type the new domain"):
        queue.submit("page-a", "   ", 2)
    with pytest.raises(FieldError, match="iterations 0"):
        queue.submit("page-a", "sketch", 0)
    bad = queue.submit(
        "page-a", "sketch", 2, base=str(tmp_path / "no-such.pt"), clip=[tiny_clip_spec], **SETTINGS
    )
    same = queue.submit(
        "page-a", "Photo", 2, base=str(base), clip=[tiny_clip_spec], source="photo", **SETTINGS
    )
    good = queue.submit("page-a", "sketch", 2, base=str(base), clip=[tiny_clip_spec], **SETTINGS)
    wait_for(lambda: bad.done and same.done and good.done, 60, "the jobs")
    queue.close()
    assert bad.status == "failed" and "no-such.pt" in bad.error and "\n" not in bad.error
    assert bad.line().startswith("sketch: failed: generator")
    # the page's controls named, not the library's fields
    assert same.error.startswith("'Source text' and 'Target text' are both 'photo'")
    assert good.status == "finished"


def test_the_page_names_its_own_controls_in_errors():
    """The library names fields (a notebook's arguments), the commands their flags; the page names the
    control to change, or the command that has the input where the page has none."""
    from nada_app.words import in_page_words
    from nada_core.errors import NadaError

    no_face = FieldError("{align} me.png: no face found; give its landmarks with {landmarks} FILE.npy")
    assert str(no_face) == "align me.png: no face found; give its landmarks with landmarks FILE.npy"
    assert in_page_words(no_face) == (
        "'Align the face first' me.png: no face found; give its landmarks with nada-edit --landmarks FILE.npy"
    )
    assert (
        in_page_words(FieldError("{iterations} 0: must be\n at least 1"))
        == "'Iterations' 0: must be at least 1"
    )
    assert in_page_words(FieldError("{mixing} 2: a probability")) == "mixing 2: a probability"
    assert in_page_words(FieldError("{base} 'r' is a run")) == "'Base generator' 'r' is a run"  # nada.adapt's
    assert (
        in_page_words(NadaError("tritonserver exited:\nE the last words"))
        == "tritonserver exited: E the last words"
    )


def test_style_images_train_an_image_guided_run(tmp_path, base, tiny_clip_spec):
    from nada_core.pngs import save_png

    style = tmp_path / "style"
    style.mkdir()
    for i in range(2):
        save_png(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8), style / f"{i}.png")
    queue, _ = make_queue(tmp_path / "runs")
    job = queue.submit(
        "page-a", "", 2, base=str(base), clip=[tiny_clip_spec], target_images=style, **SETTINGS
    )
    wait_for(lambda: job.done, 60, "the image-guided run")
    queue.close()
    assert job.status == "finished", job.error
    assert (job.target, job.out.name) == ("style images", "images")
    run = nada.Run(job.out)
    assert run.target is None and run.manifest["target_images"] == str(style)


def test_run_folders_are_named_as_nada_train_names_a_targets_folder(tmp_path):
    queue = TrainingQueue(tmp_path / "runs", adapt=lambda *a, **k: None, resume=lambda *a, **k: None)
    (tmp_path / "runs" / "pencil-sketch").mkdir()  # taken on disk: the next free name
    jobs = [queue.submit("page-a", t, 1) for t in ("Pencil Sketch!", "pencil sketch", "x" * 100)]
    queue.close()
    assert [j.out.name for j in jobs] == ["pencil-sketch-2", "pencil-sketch-3", folder_names(["x" * 100])[0]]


@pytest.fixture
def finished_run(tmp_path, base, tiny_clip_spec):
    return nada.adapt(str(base), "sketch", out=tmp_path / "runs" / "sketch", iterations=2, progress=False,
                      clip=[tiny_clip_spec], lr=0.2, **SETTINGS)  # fmt: skip


def test_runs_side_by_side_are_the_base_and_each_run_seed_by_seed(finished_run, base):
    from nada_app.views import Generators, chosen, finished_runs, side_by_side
    from nada_core.pngs import grid

    root = finished_run.path.parent
    (root / "half-written").mkdir()  # no manifest: not listed
    assert finished_runs(root) == [finished_run.path]
    mosaic, labels = side_by_side(chosen(["sketch"], root), "0-2", 0.7, Generators())
    assert labels == ["base (base.pt)", "sketch"]
    want = np.concatenate(
        [
            nada.load_generator(base, "cpu").generate([0, 1, 2], 0.7),
            finished_run.generator.generate([0, 1, 2], 0.7),
        ]
    )
    assert np.array_equal(mosaic, grid(want, rows=2))
    with pytest.raises(FieldError, match="tick at least one"):
        chosen([], root)
    with pytest.raises(FieldError, match="no such run any more"):
        chosen(["gone"], root)
    with pytest.raises(FieldError, match="at most 16 seeds"):
        side_by_side([finished_run.path], "0-16", 0.7, Generators())


def test_a_photo_is_drawn_by_the_base_and_every_run(finished_run, tmp_path):
    from nada_app.views import Generators, photo_in_domains
    from nada_core.pngs import save_png

    photo = tmp_path / "photo.png"
    save_png(finished_run.generator.generate([5], 0.7)[0], photo)
    generators, out = Generators(), tmp_path / "page"
    found = photo_in_domains(photo, [finished_run.path], generators, out, projection_steps=3)
    assert found.labels == ["your photo", "reconstruction", "sketch"]
    # in the page's folder (removed with the page), a folder per call: two pages never share a file
    again = photo_in_domains(photo, [finished_run.path], generators, out, projection_steps=3)
    assert found.png.is_relative_to(out) and again.png.is_relative_to(out) and again.png != found.png
    assert found.inverted_by.startswith("projected") and np.isfinite(found.psnr_db)
    h, w = finished_run.generator.config.image_shape
    assert found.grid.shape == (h, 3 * w + 4, 3) and np.array_equal(
        np.asarray(Image.open(found.png)), found.grid
    )
    with pytest.raises(FieldError, match="drop a photo"):
        photo_in_domains(None, [finished_run.path], Generators(), out)


def test_the_serve_tab_fetches_over_grpc_what_nada_generate_draws(finished_run, tmp_path):
    """One page's export is served; another's is loaded into the same server beside it (no restart:
    the first page's model stays served); an export that fails leaves both served."""
    import shutil

    from nada_app.views import Serving
    from nada_core.errors import NadaError
    from nada_core.pngs import grid

    serving = Serving(tmp_path / "serving")
    with pytest.raises(FieldError, match="export and serve the runs first"):
        serving.fetch("sketch", "0-3", 0.7)
    other = shutil.copytree(finished_run.path, tmp_path / "runs" / "neon")
    try:
        words = serving.start([finished_run.path])
        assert (
            serving.models == serving.exported == ["sketch"] and "tritonserver ready on 127.0.0.1:" in words
        )
        server, pid = serving.server, serving.server.process.pid
        images, latency = serving.fetch("sketch", "0-3", 0.7)
        with pytest.raises(FieldError, match="not served"):
            serving.fetch("neon", "0-3", 0.7)

        words = serving.start([other])
        assert re.fullmatch(
            r"exported 1 model\(s\) \(onnx\) in [\d.]+ s; loaded into the running tritonserver in [\d.]+ s",
            words,
        )
        assert serving.server is server and server.process.pid == pid and server.process.poll() is None
        assert serving.models == ["sketch", "neon"] and serving.exported == ["neon"]
        neon, _ = serving.fetch("neon", "0-3", 0.7)
        again, _ = serving.fetch("sketch", "0-3", 0.7)

        with pytest.raises(NadaError, match="no-such-run': no such file"):
            serving.start([tmp_path / "no-such-run"])
        assert serving.server is server and serving.fetch("neon", "0-3", 0.7)[0].shape == neon.shape
        assert serving._watcher is not None and serving._watcher.is_alive()  # still watched
    finally:
        serving.stop()
    assert server.process.poll() is not None and serving._watcher is None
    want = grid(finished_run.generator.generate([0, 1, 2, 3], 0.7), rows=1).astype(int)
    assert all(np.abs(got.astype(int) - want).max() <= 1 for got in (images, neon, again))
    assert re.fullmatch(r"4 image\(s\) over gRPC from 'sketch': [\d.]+ ms \(p50 of 5\)", latency)


def test_an_export_tritonserver_refuses_is_not_listed_and_the_page_says_so(tmp_path, monkeypatch):
    """A later export whose model Triton refuses to load (the supervisor logs it and serves the rest):
    the page lists only what is served and names the refused one; nothing served of it is an error. A
    refused new version of a model served before is not offered as the export's: Triton serves the
    earlier one, and the page says so."""
    import json
    import threading
    from types import SimpleNamespace

    import nada
    from nada_app.views import Serving
    from nada_core.errors import NadaError

    serving = Serving(tmp_path)
    serving.repository.mkdir(parents=True)
    (serving.repository / "manifest.json").write_text(
        json.dumps({"models": {"sketch": {}, "neon": {}, "pixel": {}}})
    )
    states = {"sketch": "READY", "neon": "UNAVAILABLE", "pixel": "READY"}
    serving.server = SimpleNamespace(
        process=SimpleNamespace(poll=lambda: None),
        models=lambda: [{"name": n, "state": s} for n, s in states.items()],
        stop=lambda: None,
    )
    refused_now = set()
    serving.supervisor = SimpleNamespace(
        load_changed=lambda: [], watch=threading.Event.wait, refused_now=lambda: refused_now
    )
    monkeypatch.setattr(nada, "export", lambda runs, repo, **kw: SimpleNamespace(models=["neon", "pixel"]))
    try:
        words = serving.start([tmp_path / "neon", tmp_path / "pixel"])
        assert serving.models == ["sketch", "pixel"] and serving.exported == ["pixel"]
        assert words.endswith("; not served: neon (tritonserver refused it; its words are on the terminal)")
        monkeypatch.setattr(nada, "export", lambda runs, repo, **kw: SimpleNamespace(models=["neon"]))
        with pytest.raises(
            NadaError, match="^tritonserver refused to load neon; its words are on the terminal$"
        ):
            serving.start([tmp_path / "neon"])
        assert serving._watcher.is_alive()  # the rest still served and watched

        refused_now.add("sketch")  # its new version refused; the earlier one READY
        monkeypatch.setattr(
            nada, "export", lambda runs, repo, **kw: SimpleNamespace(models=["sketch", "pixel"])
        )
        words = serving.start([tmp_path / "sketch", tmp_path / "pixel"])
        assert serving.exported == ["pixel"] and serving.models == ["sketch", "pixel"]
        assert words.endswith(
            "; sketch: tritonserver refused the new export and serves the earlier one (its words are on the terminal)"
        )
    finally:
        serving.stop()


def test_a_first_export_with_a_model_tritonserver_cannot_load_serves_the_rest(tmp_path, monkeypatch):
    """The page's first export starts its tritonserver: a model it cannot load is left out and named,
    the rest served, as with a later export (it used to serve nothing and say only that the server
    exited)."""
    import json
    from types import SimpleNamespace

    import nada
    from nada_app.views import Serving
    from tests.test_serving import ECHO_MODEL, UNLOADABLE_MODEL, echo_repository

    def export(runs, repository, **kw):
        echo_repository(repository, {"good": ECHO_MODEL, "bad": UNLOADABLE_MODEL})
        (repository / "manifest.json").write_text(json.dumps({"models": {"good": {}, "bad": {}}}))
        return SimpleNamespace(models=["good", "bad"])

    monkeypatch.setattr(nada, "export", export)
    serving = Serving(tmp_path)
    try:
        words = serving.start([tmp_path / "good", tmp_path / "bad"])
        assert serving.exported == ["good"] and serving.models == ["good"]
        assert words.endswith("; not served: bad (tritonserver refused it; its words are on the terminal)")
        assert serving.server.not_loaded == {"bad"} and serving._watcher.is_alive()
    finally:
        serving.stop()


def test_what_the_supervisor_cannot_mend_stops_that_server_and_the_next_fetch_says_why(tmp_path):
    """The Serve tab's watch gives up (a model that cannot be reloaded): its server is stopped, not left
    serving unwatched, and a fetch says why in one line; a newer export's server is never stopped by an
    older watch."""
    import threading
    from types import SimpleNamespace

    from nada_app.views import Serving
    from nada_core.errors import NadaError

    def gives_up(stop):
        raise NadaError("sketch_synthesis: could not be reloaded in 300 s:\nfailed to load")

    stopped = []
    serving = Serving(tmp_path / "serving")
    serving.server, serving.models = SimpleNamespace(stop=lambda: stopped.append("old")), ["sketch"]
    serving._supervise(SimpleNamespace(server=serving.server, watch=gives_up), threading.Event())
    assert stopped == ["old"] and serving.server is None
    with pytest.raises(FieldError) as info:
        serving.fetch("sketch", "0-3", 0.7)
    assert str(info.value) == (
        "serve: serving stopped (sketch_synthesis: could not be reloaded in 300 s: failed to load); export "
        "and serve again"
    )
    newer = SimpleNamespace(stop=lambda: stopped.append("newer"))
    serving.server = newer
    serving._supervise(SimpleNamespace(server=object(), watch=gives_up), threading.Event())
    assert serving.server is newer and stopped == ["old"]
