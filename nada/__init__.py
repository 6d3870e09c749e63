"""nada: adapt a pretrained StyleGAN2/3 generator to a new domain from text alone (StyleGAN-NADA),
export it to ONNX, AOTInductor or TensorRT, and serve it from Triton.

    import nada

    base = nada.load_generator("builtin:world")                # or a .pt, .pkl, .safetensors, random:SIZE
    run = nada.adapt(base, target="sketch", out="runs/sketch")  # a nada.Run
    images = run.generator.generate(range(8), truncation=0.7)   # uint8 [8, H, W, 3]
    nada.export([run], "triton_models")                         # then: nada-serve triton_models
    with nada.Client("127.0.0.1:8001", "sketch") as client:
        served = client.generate_seeds(list(range(8)), truncation=0.7)

`import nada` imports no torch: each name is imported when first used, so a machine with only
`pip install 'nada[client]'` can use nada.Client.
"""

from __future__ import annotations

import importlib

from nada_core import __version__

# public name -> (module, attribute): imported on first use
_NAMES = {
    "load_generator": ("nada_train.checkpoints", "load_generator"),
    "LoadedGenerator": ("nada_train.checkpoints", "LoadedGenerator"),
    "adapt": ("nada_train.runs", "adapt"),
    "resume": ("nada_train.runs", "resume"),
    "Run": ("nada_train.runs", "Run"),
    "Target": ("nada_train.many", "Target"),
    "Progress": ("nada_train.loop", "Progress"),
    "TrainOptions": ("nada_train.options", "TrainOptions"),
    "project": ("nada_train.projection", "project"),
    "Projection": ("nada_train.projection", "Projection"),
    "edit": ("nada_train.edit", "edit"),
    "load_encoder": ("nada_train.encoders.loading", "load_encoder"),
    "align_face": ("nada_train.alignment", "align_face"),
    "LoadedEncoder": ("nada_train.encoders.loading", "LoadedEncoder"),
    "blend": ("nada_train.blending", "blend"),
    "Domain": ("nada_train.domains", "Domain"),
    "latent_walk": ("nada_train.video", "latent_walk"),
    "write_video": ("nada_train.video", "write_video"),
    "export": ("nada_export.pipeline", "export"),
    "ServeOptions": ("nada_export.triton_repo", "ServeOptions"),
    "Client": ("nada_serve.client", "GeneratorClient"),
    "NadaError": ("nada_core.errors", "NadaError"),
    "FieldError": ("nada_core.errors", "FieldError"),
    "TrainingInterrupted": ("nada_core.errors", "TrainingInterrupted"),
}

__all__ = ["__version__", *_NAMES]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'nada' has no attribute '{name}'")
    module, attribute = _NAMES[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
