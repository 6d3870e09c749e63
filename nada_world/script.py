"""What the world's training scripts share: their command line (typer, as every nada command), the
thread and seed set-up, and the time-budgeted schedule (train for so many minutes; the learning rate
follows the share of the time used, so a run on a faster machine takes more steps of the same shape)."""

from __future__ import annotations

import math
import time

import torch
import typer

from nada_core.cli import run_app, typer_app


def script_app(doc: str) -> typer.Typer:
    """A command whose --help is the script's docstring (how the shipped weights were made)."""
    return typer_app(doc)


def run_script(app: typer.Typer, module: str) -> None:
    run_app(app, f"python -m {module}")


def minutes_option(
    default: float, help: str = "Wall-clock training time (the schedule follows its share used)."
) -> float:
    return typer.Option(default, help=help)


def threads_option() -> int:
    return typer.Option(0, help="torch threads (0: all cores).")


def set_up(threads: int, seed: int) -> None:
    """threads 0: torch's default (all cores)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)


class TimeBudget:
    """Steps for `minutes` of wall time: `while budget.running(): ...; budget.step()`."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.seconds, self.clock = minutes * 60, clock
        self.start, self.steps = clock(), 0

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def fraction(self) -> float:
        """Share of the budget used, 0 at the start (1 or more once it is spent)."""
        return self.elapsed / self.seconds if self.seconds > 0 else 1.0

    def running(self) -> bool:
        return self.elapsed < self.seconds

    def step(self) -> int:
        self.steps += 1
        return self.steps


def cosine(fraction: float) -> float:
    """Cosine decay from 1 at the start of the budget to 0 at its end."""
    return 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def set_lr(optimizers, lr: float) -> None:
    for opt in optimizers:
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr
