import math

import numpy as np
import pytest
import torch

from nada_core.seeds import z_batch
from nada_train.generator import Generator, GeneratorConfig
from nada_train.generator.layers import blur_kernel_2d, upfirdn2d
from tests.conftest import tiny_config, tiny_generator


def numpy_upfirdn2d(x, k, up, pad):
    """Direct loops: zero-insert, pad, correlate with the flipped kernel."""
    n, c, h, w = x.shape
    up_x = np.zeros((n, c, h * up, w * up), x.dtype)
    up_x[:, :, ::up, ::up] = x
    p = np.pad(up_x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[0], pad[1])))
    kf = k[::-1, ::-1]
    kh = k.shape[0]
    oh = p.shape[2] - kh + 1
    out = np.zeros((n, c, oh, oh), x.dtype)
    for i in range(oh):
        for j in range(oh):
            out[:, :, i, j] = (p[:, :, i : i + kh, j : j + kh] * kf).sum((2, 3))
    return out


@pytest.mark.parametrize("up,pad", [(1, (1, 1)), (2, (2, 1))])
def test_upfirdn2d_matches_direct_loops(up, pad):
    x = torch.randn(2, 3, 5, 5)
    k = torch.tensor([[1.0, 2, 0, 1], [0, 3, 1, 1], [2, 0, 1, 0], [1, 1, 1, 4]])  # asymmetric: flip matters
    got = upfirdn2d(x, k, up=up, pad=pad).numpy()
    want = numpy_upfirdn2d(x.numpy(), k.numpy(), up, pad)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_blur_kernel_normalised():
    k = blur_kernel_2d((1, 3, 3, 1), gain=4)
    assert k.shape == (4, 4) and math.isclose(float(k.sum()), 4.0, rel_tol=1e-6)
    assert float(k[0, 0]) == pytest.approx(4 / 64)


def test_fused_and_unfused_agree_forward_and_backward():
    g = tiny_generator()
    z = torch.randn(3, 32)
    ws = g.broadcast(g.mapping(z)).detach()
    outs, grads = [], []
    for fused in (False, True):
        g.zero_grad()
        img = g.synthesis(ws, fused=fused)
        img.square().mean().backward()
        outs.append(img.detach())
        grads.append(g.convs[2].conv.weight.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_state_dict_uses_rosinality_names_and_shapes():
    cfg = GeneratorConfig.rosinality(64, style_dim=64, n_mlp=3, channel_multiplier=1)
    sd = Generator(cfg).state_dict()
    assert sd["input.input"].shape == (1, 512, 4, 4)
    assert sd["style.3.weight"].shape == (64, 64) and "style.4.weight" not in sd
    assert sd["conv1.conv.weight"].shape == (1, 512, 512, 3, 3)
    assert sd["convs.6.conv.weight"].shape == (1, 256, 512, 3, 3)  # 64 px: 256 * multiplier 1
    assert sd["to_rgbs.3.conv.weight"].shape == (1, 3, 256, 1, 1)
    assert sd["convs.0.conv.blur.kernel"].shape == (4, 4)
    assert sd["to_rgbs.0.upsample.kernel"].shape == (4, 4)
    assert [k for k in sd if k.startswith("noises.")] == [f"noises.noise_{i}" for i in range(9)]
    assert sd["noises.noise_8"].shape == (1, 1, 64, 64) and sd["noises.noise_0"].shape == (1, 1, 4, 4)
    assert cfg.n_latent == 10


def test_config_inferred_from_custom_widths():
    g = tiny_generator()
    assert GeneratorConfig.infer(g.state_dict()) == tiny_config()


def test_truncation_moves_towards_w_avg():
    g = tiny_generator()
    w_avg = torch.randn(32)
    g.set_w_avg(w_avg)
    w = torch.randn(4, 32)
    assert torch.allclose(g.truncate(w, 0.0), w_avg.expand(4, -1))
    assert torch.allclose(g.truncate(w, 0.7), w_avg + 0.7 * (w - w_avg))


def test_noise_modes():
    """const: the stored noise, the same every call; none: no noise at all, i.e. the stored noise
    replaced by zeros; random: fresh noise every call, drawn from the global RNG. nada-generate's
    --noise reaches the generator as it is."""
    from nada_train.generator.inference import render

    g = tiny_generator()
    z = torch.randn(2, 32)
    a, b = g(z), g(z)
    assert torch.equal(a, b)  # stored noise is deterministic
    torch.manual_seed(1)
    r1, r2 = g(z, noise_mode="random"), g(z, noise_mode="random")
    torch.manual_seed(1)
    assert torch.equal(g(z, noise_mode="random"), r1)
    assert not torch.allclose(a, r1) and not torch.allclose(r1, r2)
    silent = tiny_generator()
    with torch.no_grad():
        for name, buffer in silent.named_buffers():
            if name.startswith("noises."):
                buffer.zero_()
    assert torch.allclose(g(z, noise_mode="none"), silent(z), atol=1e-6) and not torch.allclose(
        g(z, noise_mode="none"), a
    )
    seeds = [3, 4]
    want = (g(torch.from_numpy(z_batch(seeds, 32)), noise_mode="none").clamp(-1, 1) + 1) * 127.5
    assert (
        np.abs(render(g, seeds, 1.0, "none").astype(float) - want.detach().permute(0, 2, 3, 1).numpy()).max()
        <= 1
    )
    with pytest.raises(ValueError, match="noise mode must be const, random or none, got 'loud'"):
        g(z, noise_mode="loud")


def test_style_mixing_takes_codes_from_both():
    g = tiny_generator()
    w1, w2 = torch.randn(2, 32), torch.randn(2, 32)
    ws = g.mix(w1, w2, inject_index=3)
    assert torch.equal(ws[:, 2], w1) and torch.equal(ws[:, 3], w2) and torch.equal(ws[:, -1], w2)


def test_every_styled_layer_belongs_to_exactly_one_code():
    g = tiny_generator()
    owners = {}
    for code in range(g.n_latent):
        for name in g.layers_of_code(code, include_torgb=True):
            owners.setdefault(name, []).append(code)
    expected = (
        {"conv1", "to_rgb1"}
        | {f"convs.{i}" for i in range(len(g.convs))}
        | {f"to_rgbs.{i}" for i in range(len(g.to_rgbs))}
    )
    assert set(owners) == expected
    assert all(len(c) == 1 for c in owners.values())
    # the code that drives each layer in synthesis(): perturb one code, see which outputs change
    ws = g.broadcast(torch.randn(1, 32)).clone()
    acts = {}
    hooks = [
        getattr(g, n.split(".")[0])[int(n.split(".")[1])].register_forward_hook(
            lambda m, i, o, n=n: acts.__setitem__(n, i[1].clone())
        )
        for n in expected
        if "." in n
    ]
    g.synthesis(ws)
    base = dict(acts)
    for code in range(g.n_latent):
        ws2 = ws.clone()
        ws2[:, code] += 1
        g.synthesis(ws2)
        changed = {n for n in base if not torch.equal(base[n], acts[n])}
        assert changed == {n for n in g.layers_of_code(code, include_torgb=True) if "." in n}, code
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("fused", [False, True])
def test_a_dead_filter_demodulates_to_zero_not_nan(fused):
    """A conv whose weights are all zero (a pruned or dead filter): demodulation's epsilon keeps it
    at exactly zero instead of 0 * inf."""
    g = tiny_generator()
    with torch.no_grad():
        g.convs[1].conv.weight[:, 0] = 0  # output channel 0 of convs.1
        ws = g.broadcast(g.mapping(torch.randn(2, 32)))
        x = g.conv1(g.input(ws), ws[:, 0], None, fused)
        out = g.convs[1].conv(g.convs[0].conv(x, ws[:, 1], fused), ws[:, 2], fused)
    assert torch.isfinite(out).all() and torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))


def test_a_fresh_generator_starts_as_the_reference_initialises():
    """A generator built from a config (the world's training starts from one): mapping biases 0,
    every modulation's bias 1 (styles start at 1, the convolutions at their plain weights)."""
    from nada_train.generator.layers import EqualLinear, ModulatedConv2d

    g = tiny_generator()
    fresh = Generator(tiny_config(32))
    mapping = [m for m in fresh.style.modules() if isinstance(m, EqualLinear)]
    assert mapping and all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in mapping)
    mods = [m.modulation for m in fresh.modules() if isinstance(m, ModulatedConv2d)]
    assert len(mods) == len([m for m in g.modules() if isinstance(m, ModulatedConv2d)]) > 0
    assert all(torch.equal(m.bias, torch.ones_like(m.bias)) for m in mods)


def test_a_clamped_styled_conv_limits_both_signs():
    """NVIDIA's conv_clamp: activations limited to +-clamp, negative ones too."""
    from nada_train.generator.layers import StyledConv

    torch.manual_seed(0)
    conv = StyledConv(4, 6, 8, clamp=0.05)
    x, w = 50 * torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        conv.clamp = None
        free = conv(x, w, None)
        conv.clamp = 0.05
        out = conv(x, w, None)
    assert free.min() < -0.05 and free.max() > 0.05  # the case arises
    torch.testing.assert_close(out, free.clamp(-0.05, 0.05), rtol=0, atol=0)
