"""Small models the tests build: a 32-px generator and a 3M-parameter open_clip config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

if Path.cwd().name == "mutants":  # mutmut forks one process per mutant: an OpenMP pool made before a fork hangs its children
    torch.set_num_threads(1)

from nada_train.checkpoints import save_rosinality
from nada_train.generator import Generator, GeneratorConfig

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_CLIP_NAME = "nada-test-tiny"


def tiny_config(size: int = 32) -> GeneratorConfig:
    # custom widths (no channel multiplier gives these): the loader must read them off the tensors
    widths = {8: (32, 24), 16: (32, 24, 16), 32: (32, 24, 16, 12), 64: (32, 24, 16, 12, 8)}[size]
    return GeneratorConfig(size=size, style_dim=32, n_mlp=2, channels=widths)


def tiny_generator(seed: int = 0, size: int = 32) -> Generator:
    torch.manual_seed(seed)
    g = Generator(tiny_config(size)).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, so every path is exercised
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("to_rgb1.bias"):
                p.normal_(0, 0.1)
    return g


@pytest.fixture(scope="session")
def clip_config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip_configs")
    (folder / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
    os.environ["NADA_CLIP_CONFIG_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_spec(clip_config_dir) -> str:
    return f"{TINY_CLIP_NAME}:random"


@pytest.fixture()
def rosinality_ckpt(tmp_path) -> Path:
    g = tiny_generator()
    g.set_w_avg(torch.randn(g.config.style_dim) * 0.1)
    path = tmp_path / "base.pt"
    save_rosinality(g, path)
    return path


def adapted_copy(g: Generator, seed: int) -> Generator:
    """What nada-train changes: synthesis weights; mapping and latent_avg stay the base's."""
    from nada_train.generator import Generator as G

    out = G(g.config)
    out.load_state_dict(g.state_dict())
    out.set_w_avg(g.w_avg.clone())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith("convs."):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return out.eval()


@pytest.fixture(scope="session")
def three_generators(tmp_path_factory) -> list[Path]:
    """A base (rosinality .pt) and two adapted generators (nada .safetensors) sharing its mapping."""
    from nada_train.checkpoints import save_safetensors

    folder = tmp_path_factory.mktemp("generators")
    base = tiny_generator()
    base.set_w_avg(torch.randn(32, generator=torch.Generator().manual_seed(5)) * 0.1)
    save_rosinality(base, folder / "base.pt")
    paths = [folder / "base.pt"]
    for i, name in enumerate(("sketch", "neon")):
        save_safetensors(adapted_copy(base, i + 1), folder / f"{name}.safetensors")
        paths.append(folder / f"{name}.safetensors")
    return paths
