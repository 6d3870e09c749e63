"""StyleGAN2 generator in plain PyTorch, state-dict compatible with rosinality/stylegan2-pytorch."""

from nada_train.generator.config import GeneratorConfig
from nada_train.generator.network import Generator

__all__ = ["Generator", "GeneratorConfig"]
