"""The page (Gradio): train, watch, compare, your photo in every domain, export and serve. Every action
calls nada_app.jobs or nada_app.views; every error reaches the page as one line."""

from __future__ import annotations

import base64
import functools
import html
import secrets
import sys
import tempfile
import traceback
from pathlib import Path

import gradio as gr

from nada_app.jobs import TrainingQueue
from nada_app.views import Generators, Serving, chosen, finished_runs, photo_in_domains, side_by_side
from nada_app.words import in_page_words
from nada_core.cli import one_line
from nada_core.errors import NadaError

CSS = """
#sample img { image-rendering: pixelated; }
#progress progress { width: 100%; height: 1.2em; }
"""
STYLE_IMAGES = ".style-images"  # in the runs folder: the images of image-guided trainings
LAYERS = ["base default", "auto", "all", "texture", "shape"]


def shown(fn):
    """Any error of an action as one line in the page, never a stack trace (the trace goes to the
    terminal for unexpected ones)."""

    @functools.wraps(fn)
    def action(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except NadaError as exc:
            raise gr.Error(in_page_words(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - one line for the page
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(one_line(f"{type(exc).__name__}: {exc}"), print_exception=False) from None

    return action


def png_data_uri(path: Path) -> str:
    """The PNG inlined; each page's once-a-second poll asks for the same grid, so it is read and encoded
    once per file version (a sample grid is written once, under its step's name)."""
    return _data_uri(str(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _data_uri(path: str, mtime_ns: int) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def sample_html(job) -> str:
    """The newest sample grid at its own size (frozen row above adapted row), pixel for pixel."""
    if job is None or job.sample is None or not Path(job.sample).exists():
        return (
            "<div class='sample-empty'>the sample grid appears here after the first samples are drawn</div>"
        )
    step = int(Path(job.sample).stem.split("-")[-1])  # the grid's own step (drawn every --sample-every)
    return (
        f"<img src='{png_data_uri(job.sample)}' alt='sample grid, step {step}' "
        f"data-sample='{html.escape(str(job.sample))}' data-step='{step}'>"
        f"<div>step {step}: the base's images above, the same latents adapted below</div>"
    )


def progress_html(queue: TrainingQueue, job) -> str:
    if job is None:
        return "<div>no training started from this page</div>"
    line = job.line()
    if job.status == "queued":
        line += f" ({queue.ahead_of(job)} ahead)"
    value = f" value='{job.step}' max='{job.iterations}'" if job.iterations else ""
    return (
        f"<progress{value}></progress><div data-status='{job.status}' data-step='{job.step}' "
        f"data-iterations='{job.iterations}'>{html.escape(line)}</div>"
    )


def build_page(
    queue: TrainingQueue,
    work: Path,
    base: str = "builtin:world",
    clip: str = "",
    shape_predictor: Path | None = None,
) -> gr.Blocks:
    """The page over `queue`'s runs. `work` holds what lasts only while the page does (the served
    repository, photo grids to download): the caller removes it after the page."""
    root = queue.root
    generators = Generators()
    serving = Serving(work / "serve")

    def run_names() -> list[str]:
        return [p.name for p in finished_runs(root)]

    with gr.Blocks(title="nada", analytics_enabled=False) as page:
        gr.Markdown(
            "## nada: a generator in a new domain, from text alone\n"
            "Type what the images are and what they should become; watch it train; compare the runs, "
            "draw your own photo in each, export them to Triton and fetch images over gRPC."
        )
        job_id = gr.State(None)
        # who this page is: a random token kept in the browser's storage, so a reload is still the same
        # person (their trainings reappear) while another browser is someone else
        owner = gr.BrowserState(None, storage_key="nada-app-owner")
        with gr.Tab("Train"):
            with gr.Row():
                base_box = gr.Textbox(
                    base,
                    label="Base generator",
                    info="builtin:world, a .pt / .pkl / .safetensors file, or random:SIZE",
                    elem_id="base",
                )
                source_box = gr.Textbox("photo", label="Source text", elem_id="source")
                target_box = gr.Textbox(label="Target text", placeholder="pencil sketch", elem_id="target")
            with gr.Row():
                iterations_box = gr.Number(
                    None,
                    precision=0,
                    label="Iterations",
                    info="blank or 0: the base's default",
                    elem_id="iterations",
                )
                layers_box = gr.Dropdown(LAYERS, value=LAYERS[0], label="Layers", elem_id="layers")
                clip_box = gr.Textbox(
                    clip,
                    label="CLIP",
                    info="open_clip MODEL[:PRETRAINED]; blank: the base's own",
                    elem_id="clip",
                )
                form_box = gr.Dropdown(
                    ["full", "channels", "styles"],
                    value="full",
                    label="Parametrization",
                    elem_id="parametrization",
                )
            style_images = gr.File(
                file_count="multiple",
                file_types=["image"],
                label="or style images instead of the target text",
            )
            with gr.Row():
                # enabled once the page knows who it is (page.load below)
                start = gr.Button("Start", variant="primary", interactive=False, elem_id="start")
                stop = gr.Button("Stop", elem_id="stop")
                resume = gr.Button("Resume", elem_id="resume")
            progress = gr.HTML(progress_html(queue, None), elem_id="progress")
            sample = gr.HTML(sample_html(None), elem_id="sample")
            jobs = gr.Markdown("", elem_id="jobs")
            timer = gr.Timer(1.0)

        with gr.Tab("Runs") as runs_tab:
            runs_box = gr.CheckboxGroup(label="Finished runs", elem_id="runs")
            with gr.Row():
                seeds_box = gr.Textbox("0-7", label="Seeds", elem_id="seeds")
                truncation = gr.Slider(
                    0.0, 1.0, value=0.7, step=0.05, label="Truncation", elem_id="truncation"
                )
            show = gr.Button("Show side by side", variant="primary", elem_id="show")
            side = gr.Image(
                label="The same seeds in every domain",
                type="numpy",
                interactive=False,
                height=320,
                elem_id="side",
            )
            side_labels = gr.Markdown("", elem_id="side-labels")

        with gr.Tab("Your photo") as photo_tab:
            photo = gr.Image(
                label="Your photo", type="filepath", sources=["upload"], height=260, elem_id="photo"
            )
            with gr.Row():
                photo_runs = gr.CheckboxGroup(label="Domains (finished runs)", elem_id="photo-runs")
                align = gr.Checkbox(
                    False,
                    label="Align the face first (FFHQ)",
                    info="needs nada-app --shape-predictor (dlib's 68 landmarks)",
                    interactive=shape_predictor is not None,
                )
            draw = gr.Button("Draw it in every domain", variant="primary", elem_id="draw")
            photo_out = gr.Image(
                label="Photo, reconstruction, domains", interactive=False, height=220, elem_id="photo-out"
            )
            photo_info = gr.Markdown("", elem_id="photo-info")
            photo_file = gr.File(label="Download the grid", elem_id="photo-file")

        with gr.Tab("Serve") as serve_tab:
            serve_runs = gr.CheckboxGroup(label="Runs to export", elem_id="serve-runs")
            engine = gr.Dropdown(["onnx", "aoti"], value="onnx", label="Engine", elem_id="engine")
            export_button = gr.Button("Export and serve", variant="primary", elem_id="export")
            serve_info = gr.Markdown("", elem_id="serve-info")
            with gr.Row():
                model = gr.Dropdown([], label="Served model", elem_id="model")
                serve_seeds = gr.Textbox("0-3", label="Seeds", elem_id="serve-seeds")
                serve_truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation")
            fetch = gr.Button("Fetch over gRPC", elem_id="fetch")
            served_image = gr.Image(label="From Triton", interactive=False, height=220, elem_id="served")
            latency = gr.Markdown("", elem_id="latency")

        # ---- training -------------------------------------------------------------------------------
        @shown
        def on_start(base_, source_, target_, iterations_, layers_, clip_, form_, images_, owner_):
            if not owner_:
                raise gr.Error("the page is still loading: press Start again", print_exception=False)
            settings = {"base": base_.strip() or None, "source": source_.strip() or "photo"}
            if layers_ != LAYERS[0]:
                settings["layers"] = layers_
            if clip_.strip():
                settings["clip"] = [c.strip() for c in clip_.split(",") if c.strip()]
            if form_ != "full":
                settings["parametrization"] = form_
            if images_:
                # beside the runs, not in `work`: resuming the run later reads them again
                (root / STYLE_IMAGES).mkdir(parents=True, exist_ok=True)
                folder = Path(tempfile.mkdtemp(dir=root / STYLE_IMAGES))
                for i, f in enumerate(images_):
                    src = Path(f if isinstance(f, str) else f.name)
                    (folder / f"{i:03d}{src.suffix.lower()}").write_bytes(src.read_bytes())
                settings["target_images"] = folder
            # a blank number reaches here as None or 0 (the browser's choice): both mean the base's default
            job = queue.submit(owner_, target_, iterations_ or None, **settings)
            return job.id, progress_html(queue, job)

        @shown
        def on_stop(current, owner_):
            if current is None:
                raise gr.Error("nothing to stop: start a training first", print_exception=False)
            return progress_html(queue, queue.stop(current, owner_))

        @shown
        def on_resume(current, owner_):
            if current is None:
                raise gr.Error("nothing to resume: start a training first", print_exception=False)
            return progress_html(queue, queue.resume(current, owner_))

        def on_tick(current, owner_):
            mine = queue.jobs_of(owner_) if owner_ else []
            # after a reload the page's job is this person's latest one
            job = next((j for j in mine if j.id == current), mine[-1] if mine else None)
            listed = "\n".join(f"- {j.line()} (`{j.out}`)" for j in mine)
            return (job.id if job else None), progress_html(queue, job), sample_html(job), listed

        def identified(token):
            return token or secrets.token_hex(16), gr.update(interactive=True)

        inputs = [
            base_box,
            source_box,
            target_box,
            iterations_box,
            layers_box,
            clip_box,
            form_box,
            style_images,
            owner,
        ]
        page.load(identified, [owner], [owner, start])
        start.click(on_start, inputs, [job_id, progress])
        stop.click(on_stop, [job_id, owner], [progress])
        resume.click(on_resume, [job_id, owner], [progress])
        timer.tick(on_tick, [job_id, owner], [job_id, progress, sample, jobs], show_progress="hidden")

        # ---- runs, photo, serving -----------------------------------------------------------------
        def refreshed():
            return gr.update(choices=run_names())

        for tab, box in ((runs_tab, runs_box), (photo_tab, photo_runs), (serve_tab, serve_runs)):
            tab.select(refreshed, None, [box])
            page.load(refreshed, None, [box])

        @shown
        def on_show(runs_, seeds_, truncation_):
            image, labels = side_by_side(chosen(runs_, root), seeds_, truncation_, generators)
            return image, "Rows, top to bottom: " + ", ".join(labels)

        @shown
        def on_draw(photo_, runs_, align_):
            found = photo_in_domains(
                photo_, chosen(runs_, root), generators, work / "photos", align_, shape_predictor
            )
            info = (
                f"{', '.join(found.labels)}; inverted by {found.inverted_by}, reconstruction PSNR "
                f"{found.psnr_db:.1f} dB"
            )
            return found.grid, info, str(found.png)

        @shown
        def on_export(runs_, engine_):
            words = serving.start(chosen(runs_, root), engine_)
            return words, gr.update(choices=serving.models, value=serving.exported[0])

        @shown
        def on_fetch(model_, seeds_, truncation_):
            return serving.fetch(model_, seeds_, truncation_)

        show.click(on_show, [runs_box, seeds_box, truncation], [side, side_labels])
        draw.click(on_draw, [photo, photo_runs, align], [photo_out, photo_info, photo_file])
        export_button.click(on_export, [serve_runs, engine], [serve_info, model])
        fetch.click(on_fetch, [model, serve_seeds, serve_truncation], [served_image, latency])
    page.serving = serving  # stopped by the command on exit
    return page
