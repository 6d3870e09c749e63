"""Make the NVIDIA parity fixtures: small random-weight generators built and pickled by NVIDIA's own
stylegan2-ada-pytorch code, with the images its generate.py convention gives.

    git --git-dir=<stylegan2-ada-pytorch clone>/.git archive d72cc7d0 dnnlib torch_utils training | tar -x -C /tmp/ada
    python tests/data/nvidia/make_fixtures.py /tmp/ada tests/data/nvidia
    git --git-dir=<stylegan3 clone>/.git archive c233a919 dnnlib torch_utils training | tar -x -C /tmp/sg3
    python tests/data/nvidia/make_fixtures.py /tmp/sg3 tests/data/nvidia --module training.networks_stylegan2 \
        --prefix sg3repo- --names ada16_zw_fp16

NVIDIA's code stays in the scratch folder (its licence forbids copying it here); the .pkl files it
writes carry that code as a string, which nada never runs. On the CPU NVIDIA's ops take their own
reference paths (no CUDA plugin is built).

Per network NAME: NAME.pkl (dict G, D, G_ema, training_set_kwargs, as training_loop.py writes
snapshots) and NAME.npz: z of seeds 0-3 (RandomState(seed).randn(1, z_dim)), and for truncation 1.0
and 0.7 (noise_mode='const', fp32 throughout) the W+ codes (ws_*) and uint8 images (uint8_*,
generate.py's (img * 127.5 + 128).clamp(0, 255)).
"""

import argparse
import copy
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

SEEDS = [0, 1, 2, 3]
TRUNCATIONS = {"t100": 1.0, "t070": 0.7}
CONFIGS = {
    # name: Generator kwargs (z_dim, w_dim, resolution, mapping and synthesis kwargs)
    "ada32_clamp": dict(
        z_dim=16,
        w_dim=16,
        img_resolution=32,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=256, channel_max=24, num_fp16_res=0, conv_clamp=1.0),
    ),
    "ada16_zw_fp16": dict(
        z_dim=12,
        w_dim=20,
        img_resolution=16,
        mapping_kwargs=dict(num_layers=3, layer_features=14),
        synthesis_kwargs=dict(channel_base=160, channel_max=20, num_fp16_res=2, conv_clamp=256),
    ),
}


# networks nada must refuse, each with one clear line (no outputs kept)
REFUSED = {
    "ada8_conditional": dict(
        z_dim=8,
        w_dim=8,
        img_resolution=8,
        c_dim=3,
        mapping_kwargs=dict(num_layers=1),
        synthesis_kwargs=dict(channel_base=64, channel_max=8),
    ),
    "ada8_resnet": dict(
        z_dim=8,
        w_dim=8,
        img_resolution=8,
        c_dim=0,
        mapping_kwargs=dict(num_layers=1),
        synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture="resnet"),
    ),
}


def import_nvidia(folder: Path, module: str):
    import importlib
    import types

    sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib.util's downloads: unused here
    try:
        import pkg_resources  # noqa: F401  (stylegan3's conv2d_gradfix compares torch versions with it)
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    sys.path.insert(0, str(folder))
    import dnnlib  # noqa: F401

    return importlib.import_module(module)


def generator_kwargs(networks, kwargs: dict) -> dict:
    """stylegan2-ada's Generator takes synthesis_kwargs=dict(...); stylegan3's takes them as keywords."""
    import inspect

    original = networks.Generator.__bases__[0]  # under persistence's decorator
    param = inspect.signature(original.__init__).parameters.get("synthesis_kwargs")
    if param is not None and param.kind != param.VAR_KEYWORD:
        return kwargs
    kwargs = dict(kwargs)
    synthesis = kwargs.pop("synthesis_kwargs")
    return {**kwargs, **synthesis}


def randomise(G, seed: int) -> None:
    """Every term non-zero (noise strengths, biases, w_avg), ToRGB scaled so images use the range."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(torch.randn([], generator=gen) * 0.3)
            elif name.endswith("bias") and "affine" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        z = torch.randn(256, G.z_dim, generator=gen)
        G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(0))  # eval mode: the average is not updated
        for _ in range(3):
            img = G(torch.randn(32, G.z_dim, generator=gen), None, noise_mode="const", force_fp32=True)
            for res in G.synthesis.block_resolutions:
                getattr(G.synthesis, f"b{res}").torgb.weight.mul_(0.45 / float(img.std()))


def small_discriminator(networks, resolution: int):
    """A small StyleGAN2 discriminator, so the snapshot holds D as NVIDIA's do."""
    return networks.Discriminator(
        c_dim=0,
        img_resolution=resolution,
        img_channels=3,
        channel_base=128,
        channel_max=16,
        block_kwargs={},
        mapping_kwargs={},
        epilogue_kwargs=dict(mbstd_group_size=2),
    )


def write_snapshot(G, D, path: Path, resolution: int) -> None:
    """G, D, G_ema and training_set_kwargs, pickled as NVIDIA's training loop writes its snapshots."""
    snapshot = dict(training_set_kwargs=dict(path="random", resolution=resolution))
    for key, module in (("G", G), ("D", D), ("G_ema", G)):
        snapshot[key] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with open(path, "wb") as f:
        pickle.dump(snapshot, f)


def write_outputs(G, path: Path) -> None:
    """z of SEEDS (generate.py's convention), and per truncation the W+ codes and uint8 images."""
    z = np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in SEEDS]).astype(np.float32)
    arrays = {"z": z, "seeds": np.array(SEEDS)}
    with torch.no_grad():
        for key, psi in TRUNCATIONS.items():
            ws = G.mapping(torch.from_numpy(z), None, truncation_psi=psi)
            img = G.synthesis(ws, noise_mode="const", force_fp32=True)
            arrays[f"ws_{key}"] = ws.numpy()
            arrays[f"uint8_{key}"] = (
                (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
            )
    np.savez_compressed(path, **arrays)
    u = arrays["uint8_t100"]
    print(f"{path.name}: uint8 {u.min()}-{u.max()}, clipped {np.mean((u == 0) | (u == 255)):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "nvidia", type=Path, help="folder holding stylegan2-ada-pytorch's dnnlib/, torch_utils/, training/"
    )
    ap.add_argument("out", type=Path)
    ap.add_argument(
        "--module",
        default="training.networks",
        help="the networks module (stylegan3: training.networks_stylegan2)",
    )
    ap.add_argument(
        "--prefix", default="", help="file name prefix; with one, only the parity networks are made"
    )
    ap.add_argument("--names", nargs="+", default=list(CONFIGS), help="which parity networks to make")
    args = ap.parse_args()
    networks = import_nvidia(args.nvidia, args.module)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, kwargs) in enumerate(CONFIGS.items()):
        if name not in args.names:
            continue
        name = args.prefix + name
        torch.manual_seed(200 + i)
        G = (
            networks.Generator(c_dim=0, img_channels=3, **generator_kwargs(networks, kwargs))
            .eval()
            .requires_grad_(False)
        )
        D = small_discriminator(networks, kwargs["img_resolution"])
        randomise(G, seed=300 + i)
        write_snapshot(G, D, args.out / f"{name}.pkl", kwargs["img_resolution"])
        write_outputs(G, args.out / f"{name}.npz")
        print(
            f"{name}: {sum(p.numel() for p in G.parameters())} parameters, "
            f"{(args.out / f'{name}.pkl').stat().st_size} bytes"
        )
    if args.prefix:
        return
    for name, kwargs in REFUSED.items():
        torch.manual_seed(400)
        G = (
            networks.Generator(img_channels=3, **generator_kwargs(networks, kwargs))
            .eval()
            .requires_grad_(False)
        )
        with open(args.out / f"{name}.pkl", "wb") as f:
            pickle.dump(dict(G=G, G_ema=copy.deepcopy(G)), f)
        print(f"{name}: {(args.out / f'{name}.pkl').stat().st_size} bytes")
    D = networks.Discriminator(
        c_dim=0,
        img_resolution=8,
        img_channels=3,
        channel_base=64,
        channel_max=8,
        block_kwargs={},
        mapping_kwargs={},
        epilogue_kwargs=dict(mbstd_group_size=2),
    )
    with open(args.out / "ada8_discriminator_only.pkl", "wb") as f:
        pickle.dump(dict(D=D), f)


if __name__ == "__main__":
    main()
