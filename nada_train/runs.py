"""Runs as a user holds them: adapt() starts one (or one per target), Run opens a run directory,
resume() continues one. nada-train stands on these; a notebook or a web page calls them directly."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from nada_core.errors import FieldError
from nada_train.checkpoints import LoadedGenerator, load_generator
from nada_train.loop import Callback, train
from nada_train.many import PLAN, Target, folder_names, read_index, read_plan, train_many
from nada_train.options import TrainOptions, resolve_options
from nada_train.run_dir import RunDir

BaseLike = str | Path | LoadedGenerator | None


class Run:
    """A nada-train run directory: its manifest, options, metrics, samples and adapted generator."""

    def __init__(self, path: str | Path):
        self.dir = RunDir(path)
        self.manifest = self.dir.read_manifest("run")

    def __repr__(self) -> str:
        return (
            f"Run('{self.path}': {self.target or 'image-guided'}, {self.status}, {self.iterations_done} it)"
        )

    path = property(lambda self: self.dir.path)
    status = property(lambda self: self.manifest["status"])  # running, interrupted, finished, failed-nan
    iterations_done = property(lambda self: self.manifest["iterations_done"])
    target = property(lambda self: self.manifest.get("target"))
    options = property(lambda self: TrainOptions.from_json(self.manifest["arguments"]))

    @property
    def metrics(self) -> dict | None:
        """A built-in base's verdict (metrics.json), if its base judges runs."""
        return json.loads(self.dir.metrics_path.read_text()) if self.dir.metrics_path.exists() else None

    @property
    def samples(self) -> list[Path]:
        """The sample grids in step order (frozen row above adapted row)."""
        return sorted(self.dir.samples_dir.glob("step-*.png"))

    @cached_property
    def generator(self) -> LoadedGenerator:
        """The adapted generator, loaded once (on the CPU; .to(device) for another)."""
        return load_generator(self.path, "cpu")

    def resume(
        self, iterations: int | None = None, progress: bool = True, callback: Callback | None = None
    ) -> Run:
        """Continue this run with its own settings; `iterations` raises (or lowers) the total."""
        return resume(self.path, iterations, progress, callback)


def adapt(
    base: BaseLike = None,
    target: str | None = None,
    *,
    out: str | Path,
    targets: Iterable[str | Target] | None = None,
    source: str = "photo",
    target_images: str | Path | None = None,
    clip: list[str] | None = None,
    clip_weights: list[float] | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    **settings,
) -> Run | list[Run]:
    """Adapt `base` from `source` to `target` (text), or to the style of the images in `target_images`.

    base: a checkpoint path, builtin:NAME, random:SIZE, a LoadedGenerator, or None (the built-in base,
    whose own CLIP, templates and per-target settings apply). out: the new run directory; with
    `targets` (several texts, or Target(text, iterations)) a folder that gets one run per target,
    trained in one process that shares the frozen generator's work: a list of Runs comes back.
    clip: open_clip specs MODEL[:PRETRAINED] (default ViT-B-32, the built-in base's own where it has
    one), weighted by clip_weights. settings: any TrainOptions field (iterations=, lr=, layers=, ...).
    callback: called after every step with a nada_train.loop.Progress. Ctrl-C saves a resumable state
    (TrainingInterrupted); continue it with resume(out).
    """
    generator = _generator_spec(base)
    if targets is not None:
        if target is not None or target_images is not None:
            raise FieldError(
                "give {target} (or {target_images}) for one run, or {targets} for several, not both"
            )
        wanted = [t if isinstance(t, Target) else Target(str(t)) for t in targets]
        if not wanted:
            raise FieldError("{targets} is empty; give at least one target text")
        folder = Path(out)
        plan = [
            resolve_options(
                generator,
                folder / name,
                source,
                t.text,
                None,
                clip,
                clip_weights,
                allow_pickle,
                **{**settings, **({"iterations": t.iterations} if t.iterations else {})},
            )
            for t, name in zip(wanted, folder_names([t.text for t in wanted]))
        ]
        train_many(plan, folder, progress=progress, callback=callback)
        return _runs_of(folder)
    opts = resolve_options(
        generator, out, source, target, target_images, clip, clip_weights, allow_pickle, **settings
    )
    return Run(train(opts, progress=progress, callback=callback))


def resume(
    path: str | Path, iterations: int | None = None, progress: bool = True, callback: Callback | None = None
) -> Run | list[Run]:
    """Continue an interrupted (or finished, with more `iterations`) run with its own settings: a run
    directory gives its Run back, a several-target folder its list of Runs."""
    path = Path(path)
    if (path / PLAN).exists():
        plan = read_plan(path)
        for opts in plan:
            opts.iterations = opts.iterations if iterations is None else iterations
        train_many(plan, path, resume=True, progress=progress, callback=callback)
        return _runs_of(path)
    opts = TrainOptions.from_json(RunDir(path).read_manifest("resume")["arguments"])
    if iterations is not None:
        opts.iterations = iterations
    return Run(train(opts, resume=True, progress=progress, callback=callback))


def _generator_spec(base: BaseLike) -> str | None:
    if isinstance(base, LoadedGenerator):
        if base.kind == "run":
            raise FieldError(
                f"{{base}} '{base.source}' is a run: adapt its base, or pass the run's generator file to "
                "start from it"
            )
        return base.source
    return None if base is None else str(base)


def _runs_of(folder: Path) -> list[Run]:
    """The runs of a several-target folder in plan order (those this process's rank started)."""
    index = read_index(folder)
    return [Run(folder / r["path"]) for r in index["runs"] if (folder / r["path"] / "manifest.json").exists()]
