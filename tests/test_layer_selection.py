import pytest
import torch

from nada_train.clip import load_clip, parse_clip_spec
from nada_train.layer_selection import layers_for_codes, manual_layers, select_codes, set_trainable
from nada_train.losses import ClipGuide
from tests.conftest import tiny_generator


@pytest.fixture()
def guide(tiny_clip_spec):
    g = ClipGuide([load_clip(parse_clip_spec(tiny_clip_spec))])
    g.set_text_target("photo", "sketch")
    return g


def test_gradients_reach_exactly_the_selected_layers(guide):
    frozen, train = tiny_generator(), tiny_generator()
    chosen = layers_for_codes(train, [2, 5])
    assert chosen == ["convs.1", "convs.4"]
    set_trainable(train, chosen)
    frozen.requires_grad_(False)
    ws = frozen.broadcast(frozen.mapping(torch.randn(2, 32))).detach()
    with torch.no_grad():
        f = frozen.synthesis(ws)
    loss, _ = guide.directional(f, train.synthesis(ws))
    loss.backward()
    with_grad = {n for n, p in train.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    allowed = {n for n, _ in train.named_parameters() if n.startswith(("convs.1.", "convs.4."))}
    assert with_grad and with_grad <= allowed
    assert {n.rsplit(".", 1)[0] for n in with_grad} >= {"convs.1.conv", "convs.4.conv"}
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is None for m in guide.models for p in m.parameters())


def test_manual_sets():
    g = tiny_generator(size=64)  # 8 convs
    assert manual_layers(g, "all") == ["input", "conv1"] + [f"convs.{i}" for i in range(8)]
    assert manual_layers(g, "shape") == ["input", "conv1", "convs.0", "convs.1"]
    assert manual_layers(g, "texture") == ["input", "conv1"] + [f"convs.{i}" for i in range(2, 8)]
    params = set_trainable(g, manual_layers(g, "shape"))
    assert sum(p.numel() for p in params) == sum(
        p.numel() for n, p in g.named_parameters() if p.requires_grad
    )
    assert not any(
        p.requires_grad for n, p in g.named_parameters() if n.startswith(("style.", "to_rgb", "convs.2"))
    )


def test_texture_set_stops_at_conv_9_on_large_generators():
    from nada_train.generator import Generator, GeneratorConfig

    g = Generator(GeneratorConfig(size=256, style_dim=8, n_mlp=1, channels=(4,) * 7))  # 12 convs
    assert manual_layers(g, "texture") == ["input", "conv1"] + [f"convs.{i}" for i in range(2, 10)]
    assert manual_layers(g, "shape") == ["input", "conv1", "convs.0", "convs.1"]
    with pytest.raises(ValueError, match="unknown layer set 'middle'; choose from auto, all, texture, shape"):
        manual_layers(g, "middle")


def test_select_codes_picks_the_codes_the_loss_moves():
    g = tiny_generator()
    target = torch.zeros(g.n_latent)
    target[[1, 4]] = 1.0  # a loss that depends only on codes 1 and 4

    class Probe:
        def __call__(self, img):
            return (self.ws * target[None, :, None]).sum()

    probe = Probe()
    orig = g.synthesis

    def synth(ws, noise_mode="const"):
        probe.ws = ws
        return orig(ws)

    g.synthesis = synth
    codes = select_codes(g, torch.randn(3, 32), probe, k=2, iters=1)
    assert sorted(codes) == [1, 4]
    assert all(p.grad is None for p in g.parameters())


def test_select_codes_takes_plain_sgd_steps_of_the_given_rate():
    """Each step moves the codes by exactly lr times the loss's gradient (default lr 0.01): the ws the
    loss sees at step t+1 are those of step t less lr * grad."""
    g = tiny_generator()
    weights = torch.randn(g.n_latent, 32)  # the loss's gradient with respect to each sample's ws
    seen, live = [], []
    orig = g.synthesis

    def synth(ws, noise_mode="const"):
        seen.append(ws.detach().clone())  # ws itself is the leaf the steps update in place
        live[:] = [ws]
        return orig(ws)

    g.synthesis = synth
    w = torch.randn(2, 32)
    for kwargs, lr in (({}, 0.01), ({"lr": 0.25}, 0.25)):
        seen.clear()
        select_codes(g, w, lambda img: (live[0] * weights).sum(), k=1, iters=3, **kwargs)
        assert len(seen) == 3
        for before, after in zip(seen, seen[1:]):
            torch.testing.assert_close(after, before - lr * weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_latent,k", [(18, 12), (14, 9), (8, 5), (3, 2), (2, 1), (1, 1)])
def test_default_k_is_two_thirds_of_the_codes(n_latent, k):
    from nada_train.layer_selection import default_auto_k

    assert default_auto_k(n_latent) == k


def test_select_codes_through_the_generator_moves_only_the_codes(guide):
    """With the real global loss through synthesis: no generator weight gets a gradient, the
    requires_grad flags come back as they were, and k = 1 gives one code."""
    g = tiny_generator()
    set_trainable(g, ["convs.3"])
    flags = {n: p.requires_grad for n, p in g.named_parameters()}
    codes = select_codes(g, g.mapping(torch.randn(2, 32)).detach(), guide.global_, k=1, iters=2)
    assert len(codes) == 1 and 0 <= codes[0] < g.n_latent
    assert all(p.grad is None for p in g.parameters())
    assert {n: p.requires_grad for n, p in g.named_parameters()} == flags
    assert (
        len(select_codes(g, g.mapping(torch.randn(2, 32)).detach(), guide.global_, k=99, iters=1))
        == g.n_latent
    )


def test_the_last_code_never_takes_a_slot_unless_the_torgbs_learn():
    """The last W+ code drives only the last ToRGB; with k = 1 and a loss that moves only that code,
    selection picks the best code that trains something, or the last one when ToRGBs learn."""
    from nada_train.layer_selection import codes_with_layers

    g = tiny_generator()
    last = g.n_latent - 1
    assert codes_with_layers(g) == list(range(last)) and codes_with_layers(g, include_torgb=True) == list(
        range(g.n_latent)
    )
    weight = torch.zeros(g.n_latent)
    weight[last], weight[2] = 10.0, 1.0  # the last code moves most, code 2 next

    def loss(img):
        return (probe.ws * weight[None, :, None]).sum()

    probe = type("Probe", (), {})()
    orig = g.synthesis

    def synth(ws, noise_mode="const"):
        probe.ws = ws
        return orig(ws)

    g.synthesis = synth
    w = torch.randn(2, 32)
    assert select_codes(g, w, loss, k=1, iters=1) == [last]  # unrestricted, as the reference
    assert select_codes(g, w, loss, k=1, iters=1, candidates=codes_with_layers(g)) == [2]
    assert select_codes(g, w, loss, k=1, iters=1, candidates=codes_with_layers(g, include_torgb=True)) == [
        last
    ]
    assert layers_for_codes(g, [last]) == [] and layers_for_codes(g, [last], include_torgb=True) == [
        f"to_rgbs.{len(g.to_rgbs) - 1}"
    ]


def test_set_trainable_names_a_module_the_generator_lacks():
    with pytest.raises(KeyError, match="generator has no module 'convs.99'"):
        set_trainable(tiny_generator(), ["conv1", "convs.99"])
