"""Several targets in one run: one process loads the base and the CLIP models once, draws the same
latents for every target (one seed), so the frozen generator's images and their CLIP embeddings are
computed once a step for all; each target trains its own copy, stepped in turn (stepping them batched
would not be faster on the CPU: benchmarks.training --batching-bound, docs/benchmarks.md), into its
own run directory under OUT (everything a single run writes), with OUT/index.json listing them.

Under torchrun (WORLD_SIZE > 1) the targets are spread over the ranks (gloo on the CPU, NCCL on GPUs):
rank r trains targets r, r + K, ...; each rank writes its own run directories and refreshes the index
from what is on disk whenever one of its runs ends, so a rank that fails loses nothing the others finished.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from nada_core.errors import FieldError, NadaError, TrainingInterrupted
from nada_core.fileio import write_json
from nada_train.clip import load_clip
from nada_train.devices import resolve_device
from nada_train.factory import load_base, make_trainer
from nada_train.loop import Callback, run_to_end
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir
from nada_train.trainer import FrozenMemo, Trainer

PLAN = "targets.json"  # the TrainOptions of every target: what --resume OUT continues
INDEX = "index.json"


@dataclass
class Target:
    text: str
    iterations: int | None = None


def parse_targets_file(path: Path) -> list[Target]:
    """One target a line, optionally `| ITERATIONS` after it; blank lines and # comments skipped."""
    if not Path(path).is_file():
        raise FieldError(f"{{targets}} '{path}': no such file")
    targets = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        text, _, count = (part.strip() for part in line.partition("|"))
        if not text or (count and not (count.isdigit() and int(count) > 0)):
            raise FieldError(
                f"{{targets}} '{path}' line {number}: write TEXT or TEXT | ITERATIONS (a positive whole "
                "number)"
            )
        targets.append(Target(text, int(count) if count else None))
    if not targets:
        raise FieldError(f"{{targets}} '{path}': no targets in it")
    return targets


def folder_names(texts: list[str]) -> list[str]:
    """A run-directory name per target: its text in lowercase letters, digits and dashes, numbered when two agree."""
    names, seen = [], {}
    for text in texts:
        name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "target"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def distributed() -> tuple[int, int]:
    """(rank, world size): torchrun's, with the process group started; (0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def write_index(out: Path, plan: list[TrainOptions]) -> dict:
    """OUT/index.json from the run directories as they are on disk now."""
    runs = []
    for opts in plan:
        run = RunDir(opts.out)
        entry = {
            "target": opts.target,
            "path": run.path.name,
            "iterations": opts.iterations,
            "status": "not started",
            "iterations_done": 0,
        }
        if run.manifest_path.exists():
            manifest = run.read_manifest()
            entry.update(status=manifest["status"], iterations_done=manifest["iterations_done"])
        if run.metrics_path.exists():
            entry["metrics"] = json.loads(run.metrics_path.read_text())
        runs.append(entry)
    index = {"format": "nada-runs/1", "runs": runs}
    write_json(out / INDEX, index)
    return index


def read_index(folder: str | Path) -> dict:
    """A several-target folder's index.json; no runs where this process's rank wrote none."""
    path = Path(folder) / INDEX
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def read_plan(out: Path) -> list[TrainOptions]:
    if not (out / PLAN).exists():
        raise FieldError(f"{{resume}} '{out}': no {PLAN} there; is it a several-target nada-train directory?")
    return [TrainOptions.from_json(d) for d in json.loads((out / PLAN).read_text())["targets"]]


def rank_device(device: torch.device, rank: int, world: int, gpus: int | None = None) -> torch.device:
    """Under torchrun each rank takes a GPU of its own: LOCAL_RANK's (else its rank's), modulo the
    GPUs it sees (gpus: default torch.cuda.device_count()). A CPU run or a single process keeps `device`."""
    if device.type != "cuda" or world <= 1:
        return device
    gpus = torch.cuda.device_count() if gpus is None else gpus
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % gpus)


def train_many(
    plan: list[TrainOptions],
    out: Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
) -> Path:
    """Train every target of `plan` (each TrainOptions' out is its run directory under `out`); with
    resume, the finished ones are skipped and the others continued or started."""
    out = Path(out)
    rank, world = distributed()
    for opts in plan:
        opts.validate()
    if not resume:
        if out.exists() and any(out.iterdir()) and rank == 0:
            raise FieldError(
                f"{{out}} '{out}' exists and is not empty; choose a new directory, or continue it with "
                f"{{resume}} {out}"
            )
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / PLAN, {"format": "nada-targets/1", "targets": [o.to_json() for o in plan]})
    mine = plan[rank::world]
    if not mine:
        return out
    device = rank_device(resolve_device(mine[0].device), rank, world)
    base = load_base(mine[0], device)
    clips: dict = {}
    memo = FrozenMemo()
    trainers: list[Trainer] = []
    for opts in mine:
        run = RunDir(opts.out)
        started = run.manifest_path.exists()
        if started:
            manifest = run.read_manifest()
            if manifest["status"] == "finished" and manifest["iterations_done"] >= opts.iterations:
                continue
        if not started:
            run.check_new()
        models = [clips.setdefault(spec, load_clip(spec, device)) for spec in opts.clip]
        trainer = make_trainer(opts, run, started, device, base, models, memo)
        if not started:
            trainer.start()
        trainers.append(trainer)

    total = sum(t.opts.iterations - t.iteration for t in trainers)
    bar = tqdm(
        total=total,
        disable=not progress,
        unit="it",
        dynamic_ncols=True,
        desc=f"{len(trainers)} targets (rank {rank} of {world})",
    )
    try:
        failed = run_to_end(trainers, bar, callback, finished=lambda trainer: write_index(out, plan))
    except KeyboardInterrupt:
        write_index(out, plan)
        raise TrainingInterrupted(str(out), None, f"nada.resume('{out}')") from None
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        write_index(out, plan)
    if failed:
        why = "; ".join(f"{trainer.opts.target}: {exc}" for trainer, exc in failed)
        raise NadaError(f"{len(failed)} target(s) failed (the others are saved): {why}")
    return out
