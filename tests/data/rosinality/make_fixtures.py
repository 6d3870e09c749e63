"""Make the rosinality parity fixtures: small random-weight StyleGAN2 generators with unusual widths,
run through rosinality/stylegan2-pytorch's own model.py (not through nada), outputs saved beside them.

    git --git-dir=<rosinality/stylegan2-pytorch clone>/.git archive bef283a1 model.py op | tar -x -C /tmp/rosinality
    python tests/data/rosinality/make_fixtures.py /tmp/rosinality tests/data/rosinality

rosinality's code stays in the scratch folder; nothing of it is written into this project. Its
compiled ops (CUDA) are never built: on the CPU its modules take their own pure-PyTorch paths
(fused_leaky_relu's and upfirdn2d_native), so `torch.utils.cpp_extension.load` is stubbed out.
Its Generator takes widths from a fixed table (512 up to 32 px); the unusual widths are set by
replacing that table as the constructor assigns it, so every line of arithmetic is rosinality's.

Per generator NAME: NAME.pt ({"g_ema": state_dict, "latent_avg": w}, rosinality's checkpoint
layout) and NAME.npz: z (seeds 0-3, numpy RandomState(seed).randn(1, z_dim)), and for truncation
1.0 and 0.7 the W+ codes (ws_*) and uint8 images (uint8_*, torchvision save_image's rounding),
plus a style-mixing case (z of seed 0 up to code 3, seed 1 after).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

SEEDS = [0, 1, 2, 3]
TRUNCATIONS = {"t100": 1.0, "t070": 0.7}
MIX_INDEX = 3
CONFIGS = {
    # name: size, style_dim, n_mlp, widths per resolution
    "g32_w20": (32, 24, 3, {4: 20, 8: 18, 16: 12, 32: 10}),
    "g64_w16": (64, 16, 2, {4: 16, 8: 13, 16: 9, 32: 7, 64: 5}),
}


def import_rosinality(folder: Path):
    import torch.utils.cpp_extension as ext

    ext.load = lambda *a, **k: None  # CPU: rosinality's ops take their native PyTorch paths
    sys.path.insert(0, str(folder))
    import model

    return model


def make_generator(model, size, style_dim, n_mlp, widths, seed):
    class Narrow(model.Generator):
        def __setattr__(self, name, value):
            if name == "channels":
                value = dict(widths)
            super().__setattr__(name, value)

    torch.manual_seed(seed)
    g = Narrow(size, style_dim, n_mlp).eval()
    with torch.no_grad():  # every term non-zero: noise strengths, biases, the mapping's bias scaling
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.normal_(0, 0.3)
            elif name.endswith(".bias") and "modulation" not in name:
                p.normal_(0, 0.2 if name.startswith("style.") else 0.1)
            elif name.endswith("modulation.bias"):
                p.add_(torch.randn_like(p) * 0.1)
        # scale the ToRGB weights so images use the range instead of clipping at -1/1
        z = torch.randn(64, style_dim)
        for _ in range(3):
            img, _ = g([z], randomize_noise=False)
            scale = 0.45 / float(img.std())
            for name, p in g.named_parameters():
                if "to_rgb" in name and name.endswith("conv.weight"):
                    p.mul_(scale)
    return g


def uint8(img: torch.Tensor) -> np.ndarray:
    x = (img.clamp(-1, 1) + 1) / 2
    return torch.floor(x * 255 + 0.5).clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rosinality", type=Path, help="folder holding rosinality's model.py and op/")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    model = import_rosinality(args.rosinality)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, (size, style_dim, n_mlp, widths)) in enumerate(CONFIGS.items()):
        g = make_generator(model, size, style_dim, n_mlp, widths, seed=100 + i)
        torch.manual_seed(7)
        with torch.no_grad():
            latent_avg = g.mean_latent(4096)[0]
        torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, args.out / f"{name}.pt")
        z = np.concatenate([np.random.RandomState(s).randn(1, style_dim) for s in SEEDS]).astype(np.float32)
        arrays = {"z": z, "seeds": np.array(SEEDS)}
        with torch.no_grad():
            for key, psi in TRUNCATIONS.items():
                img, ws = g(
                    [torch.from_numpy(z)],
                    truncation=psi,
                    truncation_latent=latent_avg[None],
                    randomize_noise=False,
                    return_latents=True,
                )
                arrays[f"ws_{key}"] = ws.numpy()
                arrays[f"uint8_{key}"] = uint8(img)
            img, ws = g(
                [torch.from_numpy(z[:1]), torch.from_numpy(z[1:2])],
                inject_index=MIX_INDEX,
                randomize_noise=False,
                return_latents=True,
            )
            arrays["mix_ws"], arrays["mix_uint8"], arrays["mix_index"] = (
                ws.numpy(),
                uint8(img),
                np.array(MIX_INDEX),
            )
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        u = arrays["uint8_t100"]
        print(
            f"{name}: {sum(p.numel() for p in g.parameters())} parameters, uint8 levels {u.min()}-{u.max()}, "
            f"clipped {np.mean((u == 0) | (u == 255)):.3f}"
        )


if __name__ == "__main__":
    main()
