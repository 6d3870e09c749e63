"""Make tests/data/encoders/lpips.npz with the lpips package's own LPIPS (pip install lpips; not part
of nada, never imported by the tests): VGG16 variant v0.1, every tensor but the input scaling's
constants drawn by tests/encoder_fixtures.named_weights, on two pairs of photos. torchvision (which lpips reads VGG16's
layout from) is stubbed with that layout: 13 3x3 convs with ReLUs and 5 max pools."""

import sys
import types

NADA = "/work/main"


def stub_torchvision() -> None:
    import torch.nn as nn

    def vgg16(pretrained=False, **kw):
        layers, channels = [], 3
        for c in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, c, 3, padding=1), nn.ReLU(inplace=True)]
                channels = c
        return types.SimpleNamespace(features=nn.Sequential(*layers))

    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    models.vgg16 = vgg16
    tv.models = models
    sys.modules.update({"torchvision": tv, "torchvision.models": models})


def main(out: str) -> None:
    sys.path.insert(0, NADA)
    stub_torchvision()
    import lpips
    import numpy as np
    import torch

    from tests.encoder_fixtures import named_weights, photos

    model = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False).eval()
    lins = model._modules.pop("lins")  # the same layers again under a second name: draw them once, as linK
    named_weights(model)
    model.lins = lins
    model.scaling_layer = lpips.lpips.ScalingLayer()  # its constants, as the package sets them
    a, b = photos(2, 64, seed=21), photos(2, 64, seed=22)
    x, y = ((torch.from_numpy(p).permute(0, 3, 1, 2).float() / 127.5 - 1) for p in (a, b))
    with torch.no_grad():
        d = model(x, y).reshape(-1).numpy()
    np.savez_compressed(out, distances=d)
    print(d)


if __name__ == "__main__":
    main(sys.argv[1])
