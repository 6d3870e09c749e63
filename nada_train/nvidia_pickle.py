"""NVIDIA's StyleGAN network pickles (.pkl from stylegan2-ada-pytorch and stylegan3), read without
running any code from them, and converted to nada's Generator.

NVIDIA pickles each network together with the source code of its module (torch_utils.persistence),
and loading such a file the usual way imports and runs that source. Here a restricted unpickler
builds only what these files hold: tensors (torch's rebuild functions, storages through
torch.load(weights_only=True)), numpy scalars and dtypes, ordered dicts, dnnlib's EasyDict, and, for
each of NVIDIA's persistent objects, a PersistentObject holding its class name and state (the module
source is kept as a string and never executed). Any other class is refused by name.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from nada_core.errors import NadaError
from nada_train.generator import (
    AliasFreeLayerSpec,
    Generator,
    GeneratorConfig,
    StyleGAN3Config,
    StyleGAN3Generator,
    StyleGenerator,
)
from nada_train.generator.layers import blur_kernel_2d


class PersistentObject:
    """One of NVIDIA's persistent objects (a network or a layer), as data: never instantiated."""

    def __init__(self, meta: dict):
        self.class_name = str(meta.get("class_name"))
        self.module_src = str(meta.get("module_src", ""))  # kept, never executed
        self.state = dict(meta.get("state") or {})

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"

    def attr(self, name: str, default=None):
        value = self.state.get(name, default)
        return value.item() if isinstance(value, np.generic) else value

    def child(self, name: str) -> PersistentObject:
        child = (self.state.get("_modules") or {}).get(name)
        if not isinstance(child, PersistentObject):
            raise KeyError(name)
        return child

    def has_child(self, name: str) -> bool:
        return isinstance((self.state.get("_modules") or {}).get(name), PersistentObject)

    def tensor(self, name: str) -> torch.Tensor:
        for table in ("_parameters", "_buffers"):
            value = (self.state.get(table) or {}).get(name)
            if isinstance(value, torch.Tensor):
                return value.detach().float()
        raise KeyError(name)


class EasyDict(dict):
    """dnnlib.util.EasyDict as data: a dict (NVIDIA's also reads keys as attributes)."""


def _storage_from_bytes(data: bytes):
    """torch.storage._load_from_bytes, but through torch.load's weights-only unpickler."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _numpy_reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy _reconstruct of {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


# (module, name) -> what the name stands for when unpickled. Nothing here runs code from the file.
ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _Refused(Exception):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise _Refused(f"{module}.{name}")


def read_pickle(path: Path) -> object:
    """The pickle's contents, built from the allowed names only; NadaError naming anything else."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except _Refused as exc:
        name = str(exc)
        if name.startswith("dnnlib.tflib"):
            raise NadaError(
                f"generator '{path}': a TensorFlow-era StyleGAN pickle ({name}); convert it with "
                "stylegan2-ada-pytorch's legacy.py (or rosinality's convert_weight.py) first"
            ) from None
        raise NadaError(
            f"generator '{path}': the pickle asks for {name}, which NVIDIA's generator files do not hold; "
            "refused without running anything"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        RuntimeError,
    ) as exc:
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise NadaError(
            f"generator '{path}': not a readable NVIDIA pickle ({detail}); is the file complete?"
        ) from None


def load_nvidia_generator(path: str | Path) -> StyleGenerator:
    """G_ema of an NVIDIA .pkl as nada's Generator (fp32, its w_avg as the truncation centre)."""
    return generator_from_snapshot(read_pickle(Path(path)), str(path))


def generator_from_snapshot(data: object, path: str) -> StyleGenerator:
    """What read_pickle returned for an NVIDIA network snapshot -> its G_ema as nada's Generator;
    `path` names the file in errors. Separate from the reading so a snapshot can be checked as data."""
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise NadaError(
            f"generator '{path}': no G_ema in this pickle (it holds: {keys}); pass a network snapshot with "
            "its generator, as NVIDIA's training writes them"
        )
    g = data["G_ema"]
    if not isinstance(g, PersistentObject) or g.class_name != "Generator":
        raise NadaError(f"generator '{path}': G_ema is {g!r}, not one of NVIDIA's Generator networks")
    try:
        _check_unconditional_rgb(g, path)
        if g.child("synthesis").has_child("input"):  # StyleGAN3's Fourier-feature input layer
            return _stylegan3(g, path)
        return _stylegan2(g, path)
    except KeyError as exc:
        raise NadaError(
            f"generator '{path}': G_ema lacks {exc}; not a StyleGAN2 generator nada can read"
        ) from None
    except ValueError as exc:  # the configs' own checks: a geometry that does not add up
        raise NadaError(f"generator '{path}': {exc}") from None


def _check_unconditional_rgb(g: PersistentObject, source: str) -> None:
    c_dim = int(g.attr("c_dim", 0) or 0)
    if c_dim:
        raise NadaError(
            f"generator '{source}': a class-conditional generator (c_dim {c_dim}); nada adapts unconditional "
            "generators only"
        )
    if int(g.attr("img_channels", 3)) != 3:
        raise NadaError(f"generator '{source}': {g.attr('img_channels')} image channels; nada needs RGB (3)")


def _mapping(g: PersistentObject, source: str, state: dict[str, torch.Tensor]) -> dict:
    """The mapping network's tensors into `state` (rosinality's names); its config fields returned."""
    mapping = g.child("mapping")
    n_mlp = int(mapping.attr("num_layers"))
    fcs = [mapping.child(f"fc{i}") for i in range(n_mlp)]
    if any(fc.attr("activation") != "lrelu" for fc in fcs):
        raise NadaError(f"generator '{source}': a mapping network activation other than lrelu")
    z_dim, w_dim = int(g.attr("z_dim")), int(g.attr("w_dim"))
    hidden = int(fcs[0].tensor("weight").shape[0]) if n_mlp > 1 else w_dim
    for i, fc in enumerate(fcs):
        state[f"style.{i + 1}.weight"] = fc.tensor("weight")
        state[f"style.{i + 1}.bias"] = fc.tensor("bias")
    return dict(
        style_dim=w_dim,
        n_mlp=n_mlp,
        lr_mlp=float(fcs[0].attr("bias_gain")),
        z_features=z_dim if z_dim != w_dim else None,
        mlp_features=hidden if hidden != w_dim else None,
    )


def _loaded(generator: StyleGenerator, state: dict, w_avg: torch.Tensor, source: str) -> StyleGenerator:
    for key in set(generator.state_dict()) - set(state):
        if key.endswith(".kernel"):  # StyleGAN2's blur filters: nada's own, checked equal to the file's
            state[key] = generator.state_dict()[key]
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NadaError(
            f"generator '{source}': tensors do not fit ({' '.join(str(exc).split())[:200]})"
        ) from None
    generator.set_w_avg(w_avg)
    return generator.eval()


def _stylegan2(g: PersistentObject, source: str) -> Generator:
    state: dict[str, torch.Tensor] = {}
    mapping_fields = _mapping(g, source, state)
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    resolutions = [int(r) for r in synthesis.attr("block_resolutions")]
    blocks = [synthesis.child(f"b{r}") for r in resolutions]
    for block in blocks:
        if block.attr("architecture") != "skip":
            raise NadaError(
                f"generator '{source}': synthesis architecture '{block.attr('architecture')}'; nada reads "
                "'skip' (StyleGAN2 config-f and stylegan2-ada's default)"
            )
    first = blocks[0].child("conv1")
    clamp = first.attr("conv_clamp")
    taps = (1, 3, 3, 1)
    if not torch.allclose(blocks[0].tensor("resample_filter"), blur_kernel_2d(taps)):
        raise NadaError(f"generator '{source}': a resample filter other than [1, 3, 3, 1]")
    config = GeneratorConfig(
        size=int(g.attr("img_resolution")),
        channels=tuple(int(b.child("conv1").tensor("weight").shape[0]) for b in blocks),
        blur_kernel=taps,
        conv_clamp=None if clamp is None else float(clamp),
        **mapping_fields,
    )
    state["input.input"] = blocks[0].tensor("const")[None]
    layers = [("conv1", blocks[0].child("conv1"))] + [
        (f"convs.{2 * j + k}", block.child(f"conv{k}")) for j, block in enumerate(blocks[1:]) for k in (0, 1)
    ]
    for noise_index, (name, layer) in enumerate(layers):
        _styled_conv(state, name, layer, noise_index)
    _to_rgb(state, "to_rgb1", blocks[0].child("torgb"))
    for j, block in enumerate(blocks[1:]):
        _to_rgb(state, f"to_rgbs.{j}", block.child("torgb"))
    return _loaded(Generator(config), state, mapping.tensor("w_avg"), source)


def _stylegan3(g: PersistentObject, source: str) -> StyleGAN3Generator:
    """NVIDIA's StyleGAN3 (configs T and R): geometry read off each layer, filters taken as stored."""
    state: dict[str, torch.Tensor] = {}
    mapping_fields = _mapping(g, source, state)
    synthesis = g.child("synthesis")
    source_input = synthesis.child("input")
    names = [str(n) for n in synthesis.attr("layer_names")]
    specs = []
    for i, name in enumerate(names):
        layer = synthesis.child(name)
        in_size, out_size = (np.asarray(layer.attr(k)).reshape(-1) for k in ("in_size", "out_size"))
        if in_size.min() != in_size.max() or out_size.min() != out_size.max():
            raise NadaError(
                f"generator '{source}': layer {name} is not square ({list(in_size)} -> {list(out_size)}); "
                "nada reads square StyleGAN3 generators"
            )
        specs.append(
            AliasFreeLayerSpec(
                in_channels=int(layer.attr("in_channels")),
                out_channels=int(layer.attr("out_channels")),
                in_size=int(in_size[0]),
                out_size=int(out_size[0]),
                kernel=int(layer.attr("conv_kernel")),
                up=int(layer.attr("up_factor")),
                down=int(layer.attr("down_factor")),
                padding=tuple(int(p) for p in layer.attr("padding")),
                up_taps=int(layer.attr("up_taps")),
                down_taps=int(layer.attr("down_taps")),
                radial=bool(layer.attr("down_radial", False)),
                torgb=bool(layer.attr("is_torgb")),
            )
        )
        prefix = "to_rgb" if i == len(names) - 1 else f"layers.{i}"
        for key in ("weight", "bias", "magnitude_ema"):
            state[f"{prefix}.{key}"] = layer.tensor(key)
        for key in ("up_filter", "down_filter"):
            if (layer.state.get("_buffers") or {}).get(key) is not None:
                state[f"{prefix}.{key}"] = layer.tensor(key)
        state[f"{prefix}.affine.weight"] = layer.child("affine").tensor("weight")
        state[f"{prefix}.affine.bias"] = layer.child("affine").tensor("bias")
    clamps = {layer.attr("conv_clamp") for layer in (synthesis.child(n) for n in names)}
    if len(clamps) != 1:
        raise NadaError(f"generator '{source}': layers clamp at different limits {sorted(map(str, clamps))}")
    (clamp,) = clamps
    size = np.asarray(source_input.attr("size")).reshape(-1)
    config = StyleGAN3Config(
        size=int(g.attr("img_resolution")),
        input_channels=int(source_input.attr("channels")),
        input_size=int(size[0]),
        input_sampling_rate=float(source_input.attr("sampling_rate")),
        input_bandwidth=float(source_input.attr("bandwidth")),
        layers=tuple(specs),
        conv_clamp=None if clamp is None else float(clamp),
        output_scale=float(synthesis.attr("output_scale", 1.0)),
        **mapping_fields,
    )
    for key in ("weight", "transform", "freqs", "phases"):
        state[f"input.{key}"] = source_input.tensor(key)
    state["input.affine.weight"] = source_input.child("affine").tensor("weight")
    state["input.affine.bias"] = source_input.child("affine").tensor("bias")
    return _loaded(StyleGAN3Generator(config), state, g.child("mapping").tensor("w_avg"), source)


def _styled_conv(state: dict, name: str, layer: PersistentObject, noise_index: int) -> None:
    # [out, in, k, k]: NVIDIA applies no fan-in gain (demodulation cancels it)
    weight = layer.tensor("weight")
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    state[f"{name}.conv.weight"] = (weight * math.sqrt(fan_in))[None]  # ours multiplies by 1/sqrt(fan_in)
    state[f"{name}.conv.modulation.weight"] = layer.child("affine").tensor("weight")
    state[f"{name}.conv.modulation.bias"] = layer.child("affine").tensor("bias")
    state[f"{name}.activate.bias"] = layer.tensor("bias")
    res = int(layer.attr("resolution"))
    if layer.attr("use_noise", True):
        state[f"{name}.noise.weight"] = layer.tensor("noise_strength").reshape(1)
        state[f"noises.noise_{noise_index}"] = layer.tensor("noise_const").reshape(1, 1, res, res)
    else:
        state[f"{name}.noise.weight"] = torch.zeros(1)
        state[f"noises.noise_{noise_index}"] = torch.zeros(1, 1, res, res)


def _to_rgb(state: dict, name: str, layer: PersistentObject) -> None:
    # [3, in, 1, 1]; NVIDIA scales the styles by 1/sqrt(in), ours the weight: the same product
    weight = layer.tensor("weight")
    state[f"{name}.conv.weight"] = weight[None]
    state[f"{name}.conv.modulation.weight"] = layer.child("affine").tensor("weight")
    state[f"{name}.conv.modulation.bias"] = layer.child("affine").tensor("bias")
    state[f"{name}.bias"] = layer.tensor("bias").reshape(1, 3, 1, 1)
