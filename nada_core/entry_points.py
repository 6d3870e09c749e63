"""The console scripts' entry points: each imports its command only when run, so that a command
whose dependencies are not installed (pyproject's extras) says which extra to install instead of
printing an ImportError's traceback."""

from __future__ import annotations

import importlib

from nada_core.cli import exit_for_missing_module


def launch(module: str, prog: str) -> None:
    try:
        command = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        exit_for_missing_module(exc, prog)
    command.main_entry()


def train() -> None:
    launch("nada_train.cli.train", "nada-train")


def generate() -> None:
    launch("nada_train.cli.generate", "nada-generate")


def edit() -> None:
    launch("nada_train.cli.edit", "nada-edit")


def export() -> None:
    launch("nada_export.cli.export", "nada-export")


def serve() -> None:
    launch("nada_serve.cli.serve", "nada-serve")


def client() -> None:
    launch("nada_serve.cli.client", "nada-client")


def app() -> None:
    launch("nada_app.cli", "nada-app")
