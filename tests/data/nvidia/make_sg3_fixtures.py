"""Make the StyleGAN3 parity fixtures: small random-weight generators built and pickled by NVIDIA's own
stylegan3 code (training/networks_stylegan3.py), with the images its generate.py convention gives.

    git --git-dir=<stylegan3 clone>/.git archive c233a919 dnnlib torch_utils training | tar -x -C /tmp/sg3
    python tests/data/nvidia/make_sg3_fixtures.py /tmp/sg3 tests/data/nvidia

Configs as stylegan3's train.py sets them: T (3x3 convs, separable Kaiser filters) and R (1x1 convs,
channels doubled, radially symmetric jinc filters), two mapping layers. On the CPU NVIDIA's
filtered_lrelu and upfirdn2d take their reference paths (no CUDA plugin is built). Same files as
make_fixtures.py: NAME.pkl (G, D, G_ema, training_set_kwargs) and NAME.npz (z of seeds 0-3, then for
truncation 1.0 and 0.7 the W+ codes and uint8 images, noise_mode 'const', fp32).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import import_nvidia, small_discriminator, write_outputs, write_snapshot  # noqa: E402

CONFIGS = {
    # name: (Generator kwargs, rotation of the input's user transform in degrees, translation)
    "sg3t16": (
        dict(
            z_dim=12,
            w_dim=16,
            img_resolution=16,
            mapping_kwargs=dict(num_layers=2),
            channel_base=256,
            channel_max=16,
            num_fp16_res=4,
            conv_clamp=256,
            magnitude_ema_beta=0.5 ** (32 / 20e3),
        ),
        0.0,
        (0.0, 0.0),
    ),
    "sg3t32_short_clamp": (
        dict(
            z_dim=16,
            w_dim=16,
            img_resolution=32,
            mapping_kwargs=dict(num_layers=3),
            channel_base=512,
            channel_max=12,
            num_layers=6,
            num_critical=1,
            margin_size=6,
            num_fp16_res=0,
            conv_clamp=1.0,
        ),
        10.0,
        (0.1, -0.05),
    ),
    "sg3r16": (
        dict(
            z_dim=12,
            w_dim=16,
            img_resolution=16,
            mapping_kwargs=dict(num_layers=2),
            channel_base=512,
            channel_max=32,
            num_fp16_res=4,
            conv_clamp=256,
            conv_kernel=1,
            use_radial_filters=True,
        ),
        0.0,
        (0.0, 0.0),
    ),
}


def inverse_transform(degrees: float, translate: tuple[float, float]) -> np.ndarray:
    """generate.py's make_transform(translate, rotate), inverted, as it stores it in input.transform."""
    s, c = np.sin(np.radians(degrees)), np.cos(np.radians(degrees))
    m = np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]])
    return np.linalg.inv(m).astype(np.float32)


def randomise(G, seed: int) -> None:
    """Every term non-zero: biases, input magnitudes (magnitude_ema), the input's affine (so each w
    rotates and shifts the Fourier features), w_avg; the output scaled so images use the range."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.synthesis.named_parameters():
            if name.endswith("bias") and "affine" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        G.synthesis.input.affine.weight.copy_(
            torch.randn(G.synthesis.input.affine.weight.shape, generator=gen) * 0.3
        )
        for name, b in G.synthesis.named_buffers():
            if name.endswith("magnitude_ema"):
                b.copy_(torch.rand([], generator=gen) * 1.5 + 0.25)
        z = torch.randn(256, G.z_dim, generator=gen)
        G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(0))
        last = getattr(G.synthesis, G.synthesis.layer_names[-1])
        for _ in range(3):
            img = G(torch.randn(32, G.z_dim, generator=gen), None, noise_mode="const", force_fp32=True)
            last.weight.mul_(0.3 / float(img.std()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nvidia", type=Path, help="folder holding stylegan3's dnnlib/, torch_utils/, training/")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    networks = import_nvidia(args.nvidia, "training.networks_stylegan3")
    d_networks = import_nvidia(args.nvidia, "training.networks_stylegan2")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, (kwargs, degrees, translate)) in enumerate(CONFIGS.items()):
        torch.manual_seed(500 + i)
        G = networks.Generator(c_dim=0, img_channels=3, **kwargs).eval().requires_grad_(False)
        D = small_discriminator(d_networks, kwargs["img_resolution"])
        randomise(G, seed=600 + i)
        G.synthesis.input.transform.copy_(torch.from_numpy(inverse_transform(degrees, translate)))
        write_snapshot(G, D, args.out / f"{name}.pkl", kwargs["img_resolution"])
        write_outputs(G, args.out / f"{name}.npz")
        print(
            f"{name}: {sum(p.numel() for p in G.parameters())} parameters, {len(G.synthesis.layer_names)} "
            f"layers, {(args.out / f'{name}.pkl').stat().st_size} bytes"
        )


if __name__ == "__main__":
    main()
