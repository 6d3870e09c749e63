"""A training run's directory: what nada-train writes and what --resume, nada-generate and
nada-export read back.

  generator.safetensors  the adapted generator (with manifest.json, all that is needed downstream)
  domain.safetensors     instead, for a lightweight run (channels, styles): its parameters only
  manifest.json          base checkpoint + sha256, texts, CLIP models, layers, arguments, progress
  samples/step-NNNNNN.png  frozen row above adapted row, same latents every time
  snapshots/generator-NNNNNN.safetensors  the adapted generator every --save-every iterations
                         (domain-NNNNNN.safetensors for a lightweight run)
  log.jsonl              one line per step
  state/resume.pt        G_train, optimizer and RNG state for --resume, one file written at once
                         (tensors only, loaded weights_only)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from nada_core import __version__
from nada_core.errors import FieldError
from nada_core.fileio import append_jsonl, atomic_path, write_json
from nada_train.checkpoints import RUN_GENERATOR, RUN_MANIFEST, save_safetensors
from nada_train.domains import RUN_DOMAIN, DomainGenerator, save_domain
from nada_train.generator import StyleGenerator

MANIFEST_FORMAT = "nada-run/1"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    generator_path = property(lambda self: self.path / RUN_GENERATOR)
    domain_path = property(lambda self: self.path / RUN_DOMAIN)
    manifest_path = property(lambda self: self.path / RUN_MANIFEST)
    state_path = property(lambda self: self.path / "state" / "resume.pt")
    log_path = property(lambda self: self.path / "log.jsonl")
    samples_dir = property(lambda self: self.path / "samples")
    snapshots_dir = property(lambda self: self.path / "snapshots")
    metrics_path = property(lambda self: self.path / "metrics.json")

    def check_new(self) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            if self.manifest_path.exists():
                raise FieldError(
                    f"{{out}} '{self.path}' already holds a run; continue it with {{resume}} {self.path} or "
                    f"choose a new {{out}}"
                )
            raise FieldError(
                f"{{out}} '{self.path}' exists and is not empty; choose a new or empty directory"
            )

    def create(self) -> None:
        self.check_new()
        self.samples_dir.mkdir(parents=True, exist_ok=True)

    def read_manifest(self, field: str = "resume") -> dict:
        """The run's manifest; errors name `field`, the input that named this directory."""
        if not self.manifest_path.exists():
            raise FieldError(
                f"{{{field}}} '{self.path}': no {RUN_MANIFEST} there; is it a nada-train run directory?"
            )
        manifest = json.loads(self.manifest_path.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise FieldError(
                f"{{{field}}} '{self.path}': manifest format {manifest.get('format')!r} is not "
                f"{MANIFEST_FORMAT}"
            )
        return manifest

    def save(self, generator: StyleGenerator | DomainGenerator, state: dict, manifest: dict) -> None:
        """Weights, then resume state, then manifest: the manifest only ever names saved files."""
        self._save_weights(
            generator, self.path, "", manifest["iterations_done"], manifest["base"].get("sha256")
        )
        self.state_path.parent.mkdir(exist_ok=True)
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest["nada_version"] = __version__
        manifest["format"] = MANIFEST_FORMAT
        write_json(self.manifest_path, manifest)

    def save_snapshot(
        self, generator: StyleGenerator | DomainGenerator, iteration: int, base_sha256: str | None = None
    ) -> Path:
        """A numbered copy of the generator (the reference's save_interval checkpoints): loadable by
        nada-generate and nada-export like any .safetensors generator; a lightweight run's domain."""
        return self._save_weights(generator, self.snapshots_dir, f"-{iteration:06d}", iteration, base_sha256)

    @staticmethod
    def _save_weights(generator, folder: Path, suffix: str, iteration: int, base_sha256: str | None) -> Path:
        meta = {"iterations_done": str(iteration)}
        if isinstance(generator, DomainGenerator):
            path = folder / f"{Path(RUN_DOMAIN).stem}{suffix}.safetensors"
            domain = generator.domain()
            domain.base_sha256 = base_sha256
            save_domain(domain, path, generator.config.to_dict(), meta)
        else:
            path = folder / f"{Path(RUN_GENERATOR).stem}{suffix}.safetensors"
            save_safetensors(generator, path, meta)
        return path

    def load_state(self) -> dict:
        if not self.state_path.exists():
            raise FieldError(
                f"{{resume}} '{self.path}': {self.state_path} is missing; the run cannot be continued exactly"
            )
        return torch.load(self.state_path, map_location="cpu", weights_only=True)

    def log(self, record: dict) -> None:
        append_jsonl(self.log_path, record)

    def truncate_log(self, iteration: int) -> None:
        """Drop log lines of steps after `iteration`: a run killed after its last save logged steps
        that its resume will take again."""
        if not self.log_path.exists():
            return
        lines = self.log_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= iteration]
        if len(kept) != len(lines):
            with atomic_path(self.log_path) as tmp:
                tmp.write_text("".join(kept))

    def sample_path(self, step: int) -> Path:
        return self.samples_dir / f"step-{step:06d}.png"


def _logged_step(line: str) -> float:
    """The step a log line records; a line cut short by a crash counts as after every step."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else math.inf
    except (ValueError, KeyError, TypeError):
        return math.inf
