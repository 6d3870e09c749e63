"""Make tests/data/encoders/KIND.npz by running the authors' own code (not part of nada, never imported
by the tests). In a scratch folder holding the authors' repositories' `models/`, `utils/` and
`configs/` (omertov/encoder4editing, eladrich/pixel2style2pixel, yuval-alaluf/restyle-encoder), each
`models/stylegan2/op/__init__.py` replaced by `from authors_ops import FusedLeakyReLU, fused_leaky_relu,
upfirdn2d` (pure-PyTorch stand-ins for their CUDA ops, in this folder):

    python make_fixtures.py psp psp.npz 32
    python make_fixtures.py e4e e4e.npz 32
    python make_fixtures.py restyle_psp restyle_psp.npz 8
    python make_fixtures.py restyle_e4e restyle_e4e.npz 8

with SCRATCH and NADA set below. The weights are tests/encoder_fixtures.named_weights, drawn from
each tensor's name, so the tests rebuild the same checkpoint with nada's modules."""

import argparse
import math
import sys
import types

SCRATCH, NADA = "/tmp/encfix", "/work/main"
REPOS = {
    "psp": "eladrich+pixel2style2pixel",
    "e4e": "omertov+encoder4editing",
    "restyle_psp": "yuval-alaluf+restyle-encoder",
    "restyle_e4e": "yuval-alaluf+restyle-encoder",
}
ENCODER_TYPES = {
    "psp": "GradualStyleEncoder",
    "e4e": "Encoder4Editing",
    "restyle_psp": "BackboneEncoder",
    "restyle_e4e": "ProgressiveBackboneEncoder",
}


def stub_modules() -> None:
    """matplotlib and torchvision are imported by the authors' files but not used on this path."""
    mpl = types.ModuleType("matplotlib")
    mpl.use = lambda *a, **k: None
    tv, tvm, tvr = (
        types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.resnet")
    )
    tvm.resnet34 = tvr.resnet34 = None
    tv.models, tvm.resnet = tvm, tvr
    sys.modules.update(
        {"matplotlib": mpl, "torchvision": tv, "torchvision.models": tvm, "torchvision.models.resnet": tvr}
    )


def main(kind: str, out: str, size: int) -> None:
    sys.path[:0] = [SCRATCH, f"{SCRATCH}/{REPOS[kind]}", NADA]
    stub_modules()
    import numpy as np
    import torch
    from models.stylegan2.model import Generator

    from tests.encoder_fixtures import named_weights, photos

    n_styles = int(math.log2(size)) * 2 - 2
    restyle = kind.startswith("restyle")
    opts = dict(
        encoder_type=ENCODER_TYPES[kind], output_size=size, stylegan_size=size, n_styles=n_styles,
        input_nc=6 if restyle else 3, start_from_latent_avg=True, learn_in_w=False, label_nc=0, device="cpu",
        dataset_type="ffhq_encode", resize_outputs=False, n_iters_per_batch=2, checkpoint_path=None,
    )  # fmt: skip
    ns = argparse.Namespace(**opts)
    if kind == "psp":
        from models.encoders.psp_encoders import GradualStyleEncoder

        encoder = GradualStyleEncoder(50, "ir_se", ns)
    elif kind == "e4e":
        from models.encoders.psp_encoders import Encoder4Editing

        encoder = Encoder4Editing(50, "ir_se", ns)
    elif kind == "restyle_psp":
        from models.encoders.restyle_psp_encoders import BackboneEncoder

        encoder = BackboneEncoder(50, "ir_se", n_styles, ns)
    else:
        from models.encoders.restyle_e4e_encoders import ProgressiveBackboneEncoder

        encoder = ProgressiveBackboneEncoder(50, "ir_se", n_styles, ns)
    decoder = Generator(size, 512, 8, channel_multiplier=2)
    named_weights(encoder)
    named_weights(decoder)
    latent_avg = (0.3 * torch.randn(512, generator=torch.Generator().manual_seed(7))).repeat(n_styles, 1)
    state = {"encoder." + k: v for k, v in encoder.state_dict().items()}
    state.update({"decoder." + k: v for k, v in decoder.state_dict().items()})
    ckpt = f"{SCRATCH}/{kind}.pt"
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, ckpt)
    ns.checkpoint_path = ckpt
    if kind == "restyle_e4e":
        from models.e4e import e4e as Net
    else:
        from models.psp import pSp as Net
    net = Net(ns).eval()
    with torch.no_grad():
        if not restyle:  # the network at a small input (it is fully convolutional up to its heads)
            images = photos(2, 64, seed=1)
            x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
            drawn, codes = net(x, resize=False, randomize_noise=False, return_latents=True)
            steps = 1
        else:  # the authors' inference loop, from their average image
            from utils.inference_utils import run_on_batch

            images = photos(1, 256, seed=1)
            x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
            avg = net(net.latent_avg.unsqueeze(0), input_code=True, randomize_noise=False, average_code=True)
            _, latents = run_on_batch(x, net, ns, avg[0].float())
            codes = torch.from_numpy(np.stack([latents[0][-1]]))
            drawn = net(codes, input_code=True, randomize_noise=False, resize=False, input_is_full=True)
            steps = ns.n_iters_per_batch
    u8 = ((drawn.clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez_compressed(out, codes=codes.numpy(), images=u8, input_size=images.shape[1], steps=steps)
    print(kind, tuple(codes.shape), u8.shape, "steps", steps)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
