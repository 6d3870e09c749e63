"""The page's words for the library's fields: an error names the control to change, as the commands
name their flags. A field the page has no control for is named by the command that has it, or, where
the page never sets it, by its own name."""

from __future__ import annotations

from nada_core.cli import one_line
from nada_core.errors import NadaError

LABELS = {
    "generator": "'Base generator'",
    "base": "'Base generator'",
    "source": "'Source text'",
    "target": "'Target text'",
    "target_images": "'style images'",
    "iterations": "'Iterations'",
    "layers": "'Layers'",
    "clip": "'CLIP'",
    "parametrization": "'Parametrization'",
    "runs": "the ticked runs",
    "seeds": "'Seeds'",
    "truncation": "'Truncation'",
    "photo": "'Your photo'",
    "align": "'Align the face first'",
    "landmarks": "nada-edit --landmarks",
    "shape_predictor": "nada-app --shape-predictor",
    "engine": "'Engine'",
    "model": "'Served model'",
    "serve": "'Export and serve'",
    "job": "the job",
}


def in_page_words(exc: NadaError) -> str:
    """One line naming the page's controls: "'Iterations' 0: train for at least 1 iteration"."""
    return one_line(exc.in_words(LABELS))
