"""StyleGAN generators in plain PyTorch: StyleGAN2 (state-dict compatible with
rosinality/stylegan2-pytorch) and StyleGAN3 (configs T and R), behind one interface."""

from nada_train.generator.config import GeneratorConfig
from nada_train.generator.network import Generator, StyleGenerator
from nada_train.generator.stylegan3 import StyleGAN3Generator
from nada_train.generator.stylegan3_config import AliasFreeLayerSpec, StyleGAN3Config

AnyConfig = GeneratorConfig | StyleGAN3Config


def config_from_dict(d: dict) -> AnyConfig:
    """A config as to_dict wrote it; StyleGAN2 when the dict names no architecture."""
    if d.get("architecture") == "stylegan3":
        return StyleGAN3Config.from_dict(d)
    return GeneratorConfig.from_dict(d)


def build_generator(config: AnyConfig) -> StyleGenerator:
    return StyleGAN3Generator(config) if isinstance(config, StyleGAN3Config) else Generator(config)


__all__ = [
    "AliasFreeLayerSpec",
    "AnyConfig",
    "Generator",
    "GeneratorConfig",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "StyleGenerator",
    "build_generator",
    "config_from_dict",
]
