"""Lightweight domains (nada-train --parametrization channels|styles), blends, and the multi-domain
graph in process: what each parametrization trains, that a zero domain is the base bit for bit, that
its edits are the papers' definitions, files that round-trip, resume, and per-item domains."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from nada_core.errors import FieldError, NadaError
from nada_core.fileio import sha256_file
from nada_export.graphs import DomainsGraph, DomainsSource
from nada_train.blending import blend, parse_blend
from nada_train.checkpoints import load_generator, load_run_base, save_safetensors
from nada_train.domains import (
    RUN_DOMAIN,
    Domain,
    DomainGenerator,
    DomainTable,
    bake,
    combine,
    load_domain,
    save_domain,
)
from nada_train.factory import build
from nada_train.generator import Generator, GeneratorConfig
from nada_train.images import to_uint8
from nada_train.loop import train
from nada_train.run_dir import RunDir
from nada_train.runs import Run, resume
from nada_train.tensor_files import read_safetensors, write_safetensors
from tests.conftest import refused, tiny_generator
from tests.test_trainer import options


def random_domain(g, seed: int, parametrization: str = "channels", size: float = 0.3) -> Domain:
    gen = torch.Generator().manual_seed(seed)
    d = Domain.zeros(g, parametrization)
    part = d.shift if parametrization == "styles" else d.scale
    for n in part:
        part[n] = size * torch.randn(part[n].shape, generator=gen)
    return d


def same_domain(a: Domain, b: Domain) -> bool:
    """Both parts equal bit for bit in every layer of b."""
    return all(
        torch.equal(getattr(a, part)[n], getattr(b, part)[n]) for part in ("scale", "shift") for n in b.layers
    )


def codes(g, n: int = 4, seed: int = 3) -> torch.Tensor:
    with torch.no_grad():
        w = g.mapping(torch.randn(n, g.config.z_dim, generator=torch.Generator().manual_seed(seed)))
        return g.broadcast(w).clone() + 0.05 * torch.randn(n, g.n_latent, g.config.style_dim)


def draw(g, ws, **kw) -> torch.Tensor:
    with torch.no_grad():
        return g.synthesis(ws, **kw)


# ---- what a domain is ------------------------------------------------------------------------------
@pytest.mark.parametrize("parametrization", ["channels", "styles"])
def test_a_zero_domain_is_the_base_bit_for_bit(parametrization):
    g = tiny_generator()
    ws = codes(g)
    zero = Domain.zeros(g, parametrization)
    assert torch.equal(draw(g, ws, edits=zero.edits()), draw(g, ws))
    assert torch.equal(draw(DomainGenerator(g, parametrization), ws), draw(g, ws))
    baked = bake(g, zero)
    assert all(torch.equal(a, b) for a, b in zip(baked.state_dict().values(), g.state_dict().values()))
    assert torch.equal(draw(baked, ws), draw(g, ws))


def test_channels_is_a_multiplier_per_input_channel_of_each_convolution():
    """HyperDomainNet's definition, written as it is: each convolution's weights scaled by (1 + d) per
    input channel. The edits (the style times 1 + d) and the baked generator draw the same."""
    g = tiny_generator()
    domain = random_domain(g, 1, "channels")
    reference = copy.deepcopy(g)
    with torch.no_grad():
        for name, d in domain.scale.items():
            reference.get_submodule(name).conv.weight.mul_((1 + d)[None, None, :, None, None])
    ws = codes(g)
    want = draw(reference, ws)
    assert (want - draw(g, ws)).abs().max() > 0.05  # the domain changes the images
    torch.testing.assert_close(draw(g, ws, edits=domain.edits()), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(draw(bake(g, domain), ws), want, rtol=1e-4, atol=1e-5)


def test_styles_is_an_offset_of_each_layers_style():
    """StyleDomain's StyleSpace direction: the style (the affine's output) plus an offset: the same as
    the affine's bias moved by it."""
    g = tiny_generator()
    domain = random_domain(g, 2, "styles")
    reference = copy.deepcopy(g)
    with torch.no_grad():
        for name, o in domain.shift.items():
            reference.get_submodule(name).conv.modulation.bias.add_(o)
    ws = codes(g)
    want = draw(reference, ws)
    assert (want - draw(g, ws)).abs().max() > 0.05
    torch.testing.assert_close(draw(g, ws, edits=domain.edits()), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(draw(bake(g, domain), ws), want, rtol=1e-4, atol=1e-5)


def test_every_modulated_layer_is_a_domain_layer_with_its_input_width():
    g = tiny_generator()
    layers = g.modulated_layers()
    assert set(layers) == {"conv1", "to_rgb1"} | {f"convs.{i}" for i in range(len(g.convs))} | {
        f"to_rgbs.{j}" for j in range(len(g.to_rgbs))
    }
    assert all(width == g.get_submodule(n).conv.weight.shape[2] for n, width in layers.items())
    assert set(dict(DomainGenerator(g, "channels").named_parameters())) == {f"{n}.delta" for n in layers}


def test_lightweight_domains_refuse_a_stylegan3_base():
    from tests.test_stylegan3 import sg3

    g3 = sg3()
    for refuse in (lambda: DomainGenerator(g3, "styles"), lambda: bake(g3, Domain({}, {}, "styles"))):
        with refused(
            r"^--parametrization styles: lightweight domains are built for StyleGAN2 bases; train this "
            r"StyleGAN3 base with --parametrization full$"
        ):
            refuse()


@pytest.mark.parametrize("parametrization", ["channels", "styles"])
def test_a_trained_domain_draws_as_its_baked_generator(parametrization):
    """DomainGenerator (what a run trains) with a domain loaded draws what bake() draws, gives the
    domain back, and is the base in everything else the trainer asks of G_train."""
    g = tiny_generator()
    domain = random_domain(g, 5, parametrization)
    trained = DomainGenerator(g, parametrization)
    trained.load_domain(domain)
    ws = codes(g)
    want = draw(bake(g, domain), ws)
    assert (want - draw(g, ws)).abs().max() > 0.05
    assert torch.allclose(draw(trained, ws), want, atol=1e-5)
    back = trained.domain()
    assert same_domain(back, domain)
    z = torch.randn(3, g.config.z_dim, generator=torch.Generator().manual_seed(8))
    assert torch.equal(trained.mapping(z), g.mapping(z))
    for code in (1, 5):
        assert trained.layers_of_code(code) == g.layers_of_code(code)
        assert trained.layers_of_code(code, True) == g.layers_of_code(code, True)
    assert g.layers_of_code(5, True) != g.layers_of_code(5)  # the flag matters


def test_a_domain_keeps_what_it_says_of_itself():
    g = tiny_generator()
    zero = Domain.zeros(g, base_sha256="cd" * 32)
    assert (zero.parametrization, zero.base_sha256) == ("channels", "cd" * 32)
    domain = random_domain(g, 6, "styles")
    domain.base_sha256, domain.meta = "ef" * 32, {"note": "x"}
    moved = domain.to("cpu")
    assert (moved.parametrization, moved.base_sha256, moved.meta) == ("styles", "ef" * 32, {"note": "x"})
    assert moved.meta is not domain.meta
    assert same_domain(moved, domain)
    other = random_domain(g, 7, "styles")
    other.base_sha256 = "01" * 32
    # a blend keeps the kind its domains share (or says they are mixed) and the first one's base
    mixed = combine([domain, other, zero], [0.25, 0.5, 2.0])
    assert (mixed.parametrization, mixed.base_sha256) == ("mixed", "ef" * 32)
    same = combine([domain, other], [0.25, 0.5])
    assert same.parametrization == "styles"
    for n in domain.layers:
        assert torch.allclose(same.shift[n], 0.25 * domain.shift[n] + 0.5 * other.shift[n])


def test_domains_of_other_bases_are_refused_in_one_line():
    g, other = tiny_generator(), tiny_generator(size=16)  # fewer layers
    wider = Generator(GeneratorConfig(**{**g.config.to_dict(), "channels": (16, 16, 16, 16)}))
    assert set(wider.modulated_layers()) == set(g.modulated_layers())
    assert wider.modulated_layers() != g.modulated_layers()  # the same layers at other widths
    mine = random_domain(g, 1)
    for stranger in (random_domain(other, 2), random_domain(wider, 3)):
        with refused(r"^--blend: the domains have different layers; blend domains of one base$"):
            combine([mine, stranger], [0.5, 0.5])
        with refused(r"^--domains: the domains have different layers; serve domains of one base$"):
            DomainTable([mine, stranger])
    with refused(
        r"^--domain: its layers are not this generator's; apply a domain to the base it was trained on$"
    ):
        bake(other, mine)
    with refused(r"^--parametrization full: choose channels, styles$"):
        DomainGenerator(g, "full")


def test_a_domain_file_round_trips_and_holds_only_what_was_trained(tmp_path):
    g = tiny_generator()
    for parametrization in ("channels", "styles"):
        domain = random_domain(g, 4, parametrization)
        domain.base_sha256 = "ab" * 32
        path = tmp_path / f"{parametrization}.safetensors"
        save_domain(domain, path, g.config.to_dict())
        back, config = load_domain(path)
        assert config == g.config.to_dict() and back.parametrization == parametrization
        assert back.base_sha256 == "ab" * 32
        assert same_domain(back, domain)
        numbers = sum(w for w in g.modulated_layers().values())
        assert domain.parameters_count() == numbers
        assert path.stat().st_size < numbers * 4 + 4096  # the trained part alone, in fp32
    domain = random_domain(g, 4)  # a random base's domain: no sha256, and none read back
    save_domain(domain, tmp_path / "random.safetensors", g.config.to_dict(), {"iterations_done": "7"})
    back = load_domain(tmp_path / "random.safetensors")[0]
    assert back.base_sha256 is None and back.meta["iterations_done"] == "7"  # its metadata kept
    save_safetensors(g, tmp_path / "generator.safetensors")  # a generator is not a domain
    meta, tensors = read_safetensors(tmp_path / "random.safetensors", "domain")
    write_safetensors(tensors, tmp_path / "full.safetensors", {**meta, "parametrization": "full"})
    for name, format_ in (("generator", "'nada-stylegan2'"), ("full", "'nada-domain/1'")):
        with pytest.raises(NadaError) as refusal:
            load_domain(tmp_path / f"{name}.safetensors")
        assert str(refusal.value) == (
            f"domain '{tmp_path / name}.safetensors': not a nada domain file (format {format_})"
        )
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(NadaError, match=r"^domain '.*bad\.safetensors': not a readable safetensors"):
        load_domain(tmp_path / "bad.safetensors")


# ---- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("parametrization", ["full", "channels", "styles"])
def test_each_parametrization_trains_only_its_own_parameters(
    tmp_path, rosinality_ckpt, tiny_clip_spec, parametrization
):
    """The base is bit-identical after the steps; full moves synthesis weights, channels the scales,
    styles the shifts, and a fixed layer set (texture) moves exactly those layers' parameters."""
    opts = options(
        rosinality_ckpt, tmp_path / "r", tiny_clip_spec, layers="texture", parametrization=parametrization
    )
    trainer = build(opts, RunDir(opts.out), resume=False)
    base_before = {k: v.clone() for k, v in trainer.g_frozen.state_dict().items()}
    trained_before = {k: v.clone() for k, v in trainer.g_train.state_dict().items()}
    for _ in range(2):
        trainer.step()
    assert all(torch.equal(v, base_before[k]) for k, v in trainer.g_frozen.state_dict().items())
    moved = {k for k, v in trainer.g_train.state_dict().items() if not torch.equal(v, trained_before[k])}
    texture = trainer.g_train.layer_set("texture")
    if parametrization == "full":
        assert moved and all(any(k.startswith(n + ".") for n in texture) for k in moved), moved
        assert not any(k.startswith(("style.", "to_rgb")) for k in moved)
        return
    assert isinstance(trainer.g_train, DomainGenerator)
    assert trainer.g_train.base is trainer.g_frozen  # no copy: the base is shared, and stays frozen
    assert moved == {f"{n}.delta" for n in texture}, moved
    assert "input" not in texture and "to_rgb1" not in texture
    domain = trainer.g_train.domain()
    other = domain.scale if parametrization == "styles" else domain.shift
    assert all(not t.any() for t in other.values())  # the other part never moves


def test_a_lightweight_run_writes_its_domain_and_draws_as_its_training_did(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, parametrization="channels"), progress=False
    )
    assert (run / RUN_DOMAIN).exists() and not (run / "generator.safetensors").exists()
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "domain-000002.safetensors",
        "domain-000004.safetensors",
    ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["parametrization"] == "channels"
    domain, config = load_domain(run / RUN_DOMAIN)
    assert domain.base_sha256 == manifest["base"]["sha256"] and config == manifest["generator_config"]
    for snapshot in ("domain-000002.safetensors", "domain-000004.safetensors"):  # drawable with their base
        assert load_domain(run / "snapshots" / snapshot)[0].base_sha256 == manifest["base"]["sha256"]
    loaded = load_generator(run, "cpu")
    assert loaded.kind == "run" and loaded.domain is not None and loaded.source == str(run)
    assert loaded.sha256 == sha256_file(run / RUN_DOMAIN)  # the run's own file, not its base's
    assert loaded.domain.base_sha256 == manifest["base"]["sha256"]
    base = load_generator(rosinality_ckpt, "cpu").generator
    ws = codes(base)
    trained = DomainGenerator(base, "channels")
    trained.load_domain(domain)
    torch.testing.assert_close(draw(loaded.generator, ws), draw(trained, ws), rtol=1e-4, atol=1e-5)
    assert (draw(loaded.generator, ws) - draw(base, ws)).abs().max() > 1e-4  # it trained
    # the base changed under the run: refused, not drawn wrong
    g = tiny_generator(seed=5)
    from nada_train.checkpoints import save_rosinality

    save_rosinality(g, rosinality_ckpt)
    changed = (
        f"run directory '{run}': its base '{rosinality_ckpt}' changed since the run was trained (sha256 "
        "differs); restore the base to draw this domain"
    )
    for load in (lambda: load_generator(run, "cpu"), lambda: load_run_base(run, manifest["base"])):
        with pytest.raises(NadaError) as refusal:
            load()
        assert str(refusal.value) == changed


@pytest.mark.parametrize("parametrization", ["channels", "styles"])
def test_resume_of_a_lightweight_run_is_bit_exact(tmp_path, rosinality_ckpt, tiny_clip_spec, parametrization):
    straight = train(
        options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, parametrization=parametrization),
        progress=False,
    )
    half = options(
        rosinality_ckpt, tmp_path / "b", tiny_clip_spec, parametrization=parametrization, iterations=2
    )
    train(half, progress=False)
    resume(tmp_path / "b", iterations=4, progress=False)
    a, _ = load_domain(straight / RUN_DOMAIN)
    b, _ = load_domain(tmp_path / "b" / RUN_DOMAIN)
    part = "shift" if parametrization == "styles" else "scale"
    assert any(getattr(a, part)[n].any() for n in a.layers)
    assert all(torch.equal(getattr(a, part)[n], getattr(b, part)[n]) for n in a.layers)


# ---- blends ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_light_runs_and_a_full(tmp_path_factory, clip_config_dir):
    from tests.conftest import write_base_checkpoint

    folder = tmp_path_factory.mktemp("blend")
    ckpt = write_base_checkpoint(folder)
    clip = "nada-test-tiny:random"
    runs = [
        train(options(ckpt, folder / name, clip, parametrization=p, target=t), progress=False)
        for name, p, t in (("a", "channels", "sketch"), ("b", "styles", "neon"), ("f", "full", "neon"))
    ]
    return ckpt, runs


def images(loaded, seeds=range(4)) -> np.ndarray:
    return loaded.generate(seeds, 0.8)


def test_strength_0_is_the_base_and_1_the_domain_exactly(two_light_runs_and_a_full):
    ckpt, (a, _, f) = two_light_runs_and_a_full
    base = load_generator(ckpt, "cpu")
    for run in (a, f):
        domain = load_generator(run, "cpu")
        assert np.array_equal(images(blend(run, strength=0.0)), images(base))
        assert np.array_equal(images(blend(run, strength=1.0)), images(domain))
        state = blend(run, strength=1.0).generator.state_dict()
        assert all(torch.equal(v, domain.generator.state_dict()[k]) for k, v in state.items())
        assert not np.array_equal(images(domain), images(base))


def test_a_mix_at_its_ends_is_each_run_and_between_them_linear(two_light_runs_and_a_full):
    ckpt, (a, b, f) = two_light_runs_and_a_full
    la, lb = load_generator(a, "cpu"), load_generator(b, "cpu")
    assert np.array_equal(images(blend(a, [(b, 0.0)])), images(la))
    assert np.array_equal(images(blend(a, [(b, 1.0)])), images(lb))
    half = blend(a, [(b, 0.5)])
    want = combine([la.domain, lb.domain], [0.5, 0.5])
    assert half.domain is not None
    for n in want.layers:
        torch.testing.assert_close(half.domain.scale[n], 0.5 * la.domain.scale[n])
        torch.testing.assert_close(half.domain.shift[n], 0.5 * lb.domain.shift[n])
    # strength 2: twice the domain's change of every style
    double = blend(a, strength=2.0)
    for n in la.domain.layers:
        torch.testing.assert_close(double.domain.scale[n], 2 * la.domain.scale[n])
    # a full run and a lightweight one: the network halfway, the edits half
    base = load_generator(ckpt, "cpu").generator.state_dict()
    lf = load_generator(f, "cpu").generator.state_dict()
    mixed = blend(a, [(f, 0.5)])
    key = "convs.0.conv.weight"
    torch.testing.assert_close(mixed.generator.state_dict()[key], 0.5 * base[key] + 0.5 * lf[key])


def test_blends_are_refused_in_one_line(two_light_runs_and_a_full, tmp_path):
    ckpt, (a, b, _) = two_light_runs_and_a_full
    for spec in ("runs/a", "runs/a:x", ":0.5", "a:nan"):
        with pytest.raises(FieldError, match="write RUN:WEIGHT"):
            parse_blend(spec)
    assert parse_blend("C:/runs/b:0.25") == ("C:/runs/b", 0.25)
    other = tiny_generator(seed=9)
    from nada_train.checkpoints import save_safetensors

    save_safetensors(other, tmp_path / "other.safetensors")
    with pytest.raises(FieldError, match="different bases"):
        blend(a, [(tmp_path / "other.safetensors", 0.5)])
    with pytest.raises(FieldError, match="strength"):
        blend(a, strength=float("nan"))


# ---- many domains in one graph ---------------------------------------------------------------------
def test_the_multi_domain_graph_draws_each_item_in_its_own_domain():
    """A batch that mixes domains (and repeats them) equals each domain's own baked generator within
    one level, item by item; one gather, no loop over domains."""
    g = tiny_generator()
    g.set_w_avg(None)
    domains = [Domain.zeros(g), random_domain(g, 1, "channels"), random_domain(g, 2, "styles")]
    graph = DomainsGraph(DomainsSource(g, domains, ["base", "a", "b"])).eval()
    ws = codes(g, 6)
    index = torch.tensor([[2], [0], [1], [1], [2], [0]], dtype=torch.int32)
    with torch.no_grad():
        got = graph(ws, index).numpy().astype(int)
    for item, k in enumerate(index.flatten().tolist()):
        want = to_uint8(draw(bake(g, domains[k]), ws[item : item + 1])).numpy().astype(int)
        assert np.abs(got[item] - want[0]).max() <= 1, (item, k)
    alone = DomainTable(domains[1:2]).edits(torch.tensor([0, 0]))  # a table of one domain
    assert all(
        torch.equal(alone[n].scale, (1 + domains[1].scale[n]).expand(2, -1)) for n in domains[1].layers
    )
    # one code in every domain: three different images (the index is not ignored)
    with torch.no_grad():
        same = graph(ws[:1].expand(3, -1, -1), torch.tensor([[0], [1], [2]], dtype=torch.int32)).numpy()
    assert all(np.abs(same[i].astype(int) - same[j]).max() > 5 for i, j in ((0, 1), (0, 2), (1, 2)))


def test_a_reduced_precision_multi_domain_model_is_checked_in_every_domain():
    """The precision gate's seeds are drawn in each domain of the model: an engine that is off in
    its last domain alone, on those seeds alone, is refused; the same engine exact passes."""
    from nada_export.parity import check_parity

    g = tiny_generator()
    source = DomainsSource(
        g, [Domain.zeros(g), random_domain(g, 1), random_domain(g, 2, "styles")], list("xyz")
    )
    graph = DomainsGraph(source).eval()
    calls = []

    def engine(off_in_domain: int | None):
        def run(feed):
            calls.append(feed)
            with torch.no_grad():
                out = graph(torch.from_numpy(feed["ws"]), torch.from_numpy(feed["domain"])).numpy()
            if len(calls) > 2 and off_in_domain is not None and int(feed["domain"][0, 0]) == off_in_domain:
                out = np.clip(out.astype(int) + 40, 0, 255).astype(out.dtype)  # past the 2 batches
            return out

        return run

    assert check_parity(source, "domains", engine(None), [1, 2], precision="bf16").passed
    gate_feeds = calls[2:]
    assert sorted({int(f["domain"][0, 0]) for f in gate_feeds}) == [0, 1, 2]
    assert len(gate_feeds) == 3 * len({f["ws"].tobytes() for f in gate_feeds})  # each seed, each domain
    calls.clear()
    assert not check_parity(source, "domains", engine(2), [1, 2], precision="bf16").passed


def test_run_api_reopens_a_lightweight_run(two_light_runs_and_a_full):
    _, (a, _, _) = two_light_runs_and_a_full
    run = Run(a)
    assert run.options.parametrization == "channels" and run.generator.domain is not None
