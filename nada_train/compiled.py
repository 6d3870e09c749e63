"""The training step's heavy calls (synthesis, CLIP image encoding) compiled with torch.compile
(Inductor) and, with --compile cudagraphs on CUDA, captured in CUDA graphs.

A compiled graph is specialised on which of its inputs need gradients, and adaptive layer selection
changes the trainable layers every step. So a compiled run always asks gradients of every synthesis
layer in the training step and drops those of the layers not chosen before the update (Adam skips a
parameter without a gradient, as in the eager path, which freezes them instead): one graph serves
every choice of layers, with the same update. The price is the weight gradients of the unchosen layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nada_core.errors import FieldError

COMPILE_CHOICES = ("off", "inductor", "cudagraphs")
# torch.compile's backend. The tests set "aot_eager": the same capture (Dynamo) and autograd graphs
# (AOTAutograd), without Inductor's code generation, which takes minutes cold on a 2-core CPU.
BACKEND = "inductor"


def check_compile(mode: str, device: torch.device) -> None:
    """The device can run the mode (TrainOptions.validate checks the mode is one of COMPILE_CHOICES)."""
    if mode == "cudagraphs" and device.type != "cuda":
        raise FieldError(
            f"{{compile}} cudagraphs: CUDA graphs need a CUDA device, this run is on {device}; use "
            f"{{compile}} inductor"
        )


def compiled(fn: Callable, mode: str) -> Callable:
    """fn itself (off) or its torch.compile'd twin. Shapes are static: a run uses a few fixed batch
    sizes, each compiled once."""
    if mode == "off":
        return fn
    if BACKEND != "inductor":
        return torch.compile(fn, backend=BACKEND, dynamic=False)
    return torch.compile(fn, mode="reduce-overhead" if mode == "cudagraphs" else None, dynamic=False)


def step_begins(mode: str) -> None:
    """Tells the CUDA-graph trees a new training step starts: outputs of the last one may be reused."""
    if mode == "cudagraphs":
        torch.compiler.cudagraph_mark_step_begin()


def drop_unchosen_gradients(params: list[torch.nn.Parameter], chosen: list[torch.nn.Parameter]) -> None:
    """After a compiled backward (which gave every synthesis layer a gradient): only the chosen keep theirs."""
    keep = {id(p) for p in chosen}
    for p in params:
        if id(p) not in keep:
            p.grad = None
