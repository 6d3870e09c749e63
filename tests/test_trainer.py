import io
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from nada_core.errors import NadaError
from nada_train.clip import parse_clip_spec
from nada_train.devices import resolve_device
from nada_train.factory import build
from nada_train.layer_selection import manual_layers
from nada_train.loop import train
from nada_train.losses import ClipGuide
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir
from nada_train.trainer import Trainer
from tests.conftest import refused, relative_step_difference, tiny_generator, write_base_checkpoint


def options(ckpt, out, clip, **kw):
    base = dict(
        generator=str(ckpt),
        out=str(out),
        target="sketch",
        clip=[parse_clip_spec(clip)],
        iterations=4,
        n_sample=2,
        sample_every=2,
        save_every=2,
        device="cpu",
        auto_layer_batch=2,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_training_steps_descend_the_loss_and_turn_images_toward_the_text(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """Trainer.step as train() runs it, on one fixed batch of latents: the directional loss falls and
    held-out images of G_train move along the text direction in CLIP space (a step that climbs the
    loss moves them against it; a step that updates nothing leaves them where G_frozen has them)."""
    opts = options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, layers="all", batch=4)
    trainer = build(opts, RunDir(opts.out), resume=False)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        fixed = trainer.g_frozen.broadcast(trainer.g_frozen.mapping(torch.randn(4, 32, generator=gen)))
        held_out = trainer.g_frozen.broadcast(trainer.g_frozen.mapping(torch.randn(8, 32, generator=gen)))
    trainer._latents = lambda n: fixed

    def held_out_similarity():
        with torch.no_grad():
            return trainer.guide.direction_similarity(
                trainer.g_frozen.synthesis(held_out), trainer.g_train.synthesis(held_out)
            )

    assert held_out_similarity() == pytest.approx(0.0, abs=1e-3)  # G_train starts as G_frozen
    losses = [trainer.step()["loss"] for _ in range(6)]
    assert losses[0] == pytest.approx(1.0, abs=1e-3)  # no step yet: orthogonal to every direction
    assert losses[-1] < losses[1] < losses[0] - 0.1, losses
    assert held_out_similarity() > 0.1


def weights(run):
    return load_file(str(run / "generator.safetensors"))


def test_run_outputs_and_interrupted_resume_equals_straight_run(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    straight = train(options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec), progress=False)
    manifest = json.loads((straight / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["iterations_done"] == 4
    assert manifest["base"]["sha256"] and manifest["target"] == "sketch"
    assert manifest["clip"] == [
        {
            "name": "nada-test-tiny",
            "pretrained": "random",
            "weight": 1.0,
            "config": "nada-test-tiny",
            "quick_gelu": False,
        }
    ]
    assert sorted(p.name for p in (straight / "samples").iterdir()) == [
        "step-000000.png",
        "step-000002.png",
        "step-000004.png",
    ]
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["layers"] and r["seconds"] > 0 for r in log)
    assert not list(straight.rglob("*.tmp"))

    base = tiny_generator().state_dict()
    a = weights(straight)
    assert not torch.equal(a["convs.0.conv.weight"], base["convs.0.conv.weight"])  # it did train
    assert torch.equal(a["style.1.weight"], base["style.1.weight"])  # mapping frozen
    assert torch.equal(a["to_rgbs.0.conv.weight"], base["to_rgbs.0.conv.weight"])  # ToRGB frozen


def sigint():
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture()
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal: a test run started in the background
    (`pytest &` in a script) inherits it ignored, and the Ctrl-C tests would see nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_in_layer_selection(monkeypatch, trainer_calls):
    real = ClipGuide.global_

    def global_(self, images):
        if trainer_calls["iteration"] == 2:
            sigint()
        return real(self, images)

    monkeypatch.setattr(ClipGuide, "global_", global_)


def interrupt_in_loss(monkeypatch, trainer_calls):
    real = ClipGuide.directional

    def directional(self, *args):
        loss, parts = real(self, *args)
        if trainer_calls["iteration"] == 2:
            sigint()
        return loss, parts

    monkeypatch.setattr(ClipGuide, "directional", directional)


def interrupt_in_backward(monkeypatch, trainer_calls):
    """Half-way through backward: CLIP's part done, the generator's not yet begun."""
    real = ClipGuide.directional

    def directional(self, frozen, trained, *rest):
        if trainer_calls["iteration"] == 2:
            trained.register_hook(lambda grad: sigint())
        return real(self, frozen, trained, *rest)

    monkeypatch.setattr(ClipGuide, "directional", directional)


def interrupt_before_optimizer_step(monkeypatch, trainer_calls):
    trainer_calls["pre_hook"] = lambda opt, args, kwargs: (
        sigint() if trainer_calls["iteration"] == 2 else None
    )


def interrupt_after_optimizer_step(monkeypatch, trainer_calls):
    trainer_calls["post_hook"] = lambda opt, args, kwargs: (
        sigint() if trainer_calls["iteration"] == 2 else None
    )


CTRL_C_RUN = dict(iterations=5, save_every=100, sample_every=100)


@pytest.fixture(scope="module")
def straight_five(tmp_path_factory, tiny_clip_spec):
    """The uninterrupted run every Ctrl-C case is compared with (made once: the same base weights)."""
    folder = tmp_path_factory.mktemp("straight")
    return train(
        options(write_base_checkpoint(folder), folder / "a", tiny_clip_spec, **CTRL_C_RUN), progress=False
    )


@pytest.mark.parametrize(
    "place,saved_at",
    [
        (interrupt_in_layer_selection, 2),  # rolled back: the step had changed only the RNG
        (interrupt_in_loss, 2),
        (interrupt_in_backward, 2),
        (interrupt_before_optimizer_step, 3),  # held until the commit is whole: the step counts
        (interrupt_after_optimizer_step, 3),
    ],
)
def test_ctrl_c_anywhere_in_a_step_then_resume_equals_a_straight_run(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch, place, saved_at, ctrl_c_raises, straight_five
):
    """A real SIGINT at each point of iteration 3 (auto layer selection, so every phase runs)."""
    kw, straight = CTRL_C_RUN, straight_five

    calls = {"iteration": -1}
    place(monkeypatch, calls)
    real_step = Trainer.step

    def step(self, *args, **kwargs):
        calls["iteration"] = self.iteration
        if "pre_hook" in calls and "hooked" not in calls:
            calls["hooked"] = [self.optimizer.register_step_pre_hook(calls["pre_hook"])]
        if "post_hook" in calls and "hooked" not in calls:
            calls["hooked"] = [self.optimizer.register_step_post_hook(calls["post_hook"])]
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(NadaError, match=f"interrupted at iteration {saved_at}"):
        train(options(rosinality_ckpt, tmp_path / "b", tiny_clip_spec, **kw), progress=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["iterations_done"] == saved_at
    monkeypatch.undo()
    resumed = train(TrainOptions.from_json(manifest["arguments"]), resume=True, progress=False)

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (torch.load(r / "state" / "resume.pt", weights_only=True) for r in (straight, resumed))
    assert sa["iteration"] == sb["iteration"] == 5 and torch.equal(sa["rng"], sb["rng"])
    assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
    state_a, state_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    # the same parameters have Adam state, in both
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for k in state_a:
        assert state_a[k].keys() == state_b[k].keys() and all(
            torch.equal(state_a[k][n], state_b[k][n]) for n in state_a[k]
        )
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_resume_state_is_one_file_that_wins_over_a_newer_generator_file(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """A crash between writing generator.safetensors and state/resume.pt leaves the two at different
    iterations; resume takes the weights saved with the optimizer, not the newer generator file."""
    kw = dict(iterations=4, save_every=100, sample_every=100)
    straight = train(options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, **kw), progress=False)
    run = train(
        options(rosinality_ckpt, tmp_path / "b", tiny_clip_spec, **{**kw, "iterations": 2}), progress=False
    )
    state = (run / "state" / "resume.pt").read_bytes()
    manifest = json.loads((run / "manifest.json").read_text())
    opts = TrainOptions.from_json(manifest["arguments"])
    opts.iterations = 3
    train(opts, resume=True, progress=False)  # generator.safetensors now at 3 ...
    (run / "state" / "resume.pt").write_bytes(state)  # ... resume.pt still at 2, as after a crash
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 0.5')  # and a log line cut short
    opts.iterations = 4
    train(opts, resume=True, progress=False)
    a, b = weights(straight), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_sigterm_saves_like_ctrl_c(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    real = ClipGuide.directional
    calls = {"n": 0}

    def directional(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args)

    monkeypatch.setattr(ClipGuide, "directional", directional)
    run = tmp_path / "r"
    with pytest.raises(NadaError) as e:
        train(options(rosinality_ckpt, run, tiny_clip_spec), progress=False)
    assert (
        str(e.value)
        == f"interrupted at iteration 1; state saved in {run}; continue with: nada.resume('{run}')"
    )
    assert (e.value.run, e.value.iteration) == (str(run), 1)
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    good = train(
        options(rosinality_ckpt, tmp_path / "good", tiny_clip_spec, iterations=2, layers="all"),
        progress=False,
    )
    real = ClipGuide.directional
    calls = {"n": 0}

    def nan_on_third(self, f, t, *rest):
        calls["n"] += 1
        loss, parts = real(self, f, t, *rest)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(ClipGuide, "directional", nan_on_third)
    with pytest.raises(NadaError) as e:
        train(options(rosinality_ckpt, tmp_path / "bad", tiny_clip_spec, layers="all"), progress=False)
    assert e.value.for_command_line() == (
        f"loss is nan at iteration 3; the last good state (iteration 2) is saved in {tmp_path / 'bad'}; lower "
        "--lr or use --precision fp32"
    )
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    assert manifest["status"] == "failed-nan" and manifest["iterations_done"] == 2
    a, b = weights(good), weights(tmp_path / "bad")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kw,message",
    [
        (
            dict(target=""),
            "--target is empty; name the new domain, e.g. --target 'pencil sketch' (or pass --target-images "
            "DIR)",
        ),
        (
            dict(target="Photo"),
            "--source and --target are both 'photo'; the direction between them is zero, name a different "
            "target",
        ),
        (dict(source=" "), "--source is empty; name the generator's domain, e.g. --source photo"),
        (dict(layers="middle"), "--layers 'middle': choose one of auto, all, texture, shape"),
        (dict(mixing=2.0), "--mixing 2.0: a probability, between 0 and 1"),
        (dict(iterations=0), "--iterations 0: must be at least 1"),
        (dict(batch=0), "--batch 0: must be at least 1"),
        (dict(n_sample=0), "--n-sample 0: must be at least 1"),
        (dict(auto_layer_batch=0), "--auto-layer-batch 0: must be at least 1"),
        (dict(auto_layer_iters=0), "--auto-layer-iters 0: must be at least 1"),
        (dict(sample_every=0), "--sample-every 0: must be at least 1"),
        (dict(lr=0.0), "--lr 0.0: must be a positive number"),
        (dict(lr=float("inf")), "--lr inf: must be a positive number"),
        (
            dict(sample_truncation=float("nan")),
            "--sample-truncation nan: must be a number (1 = no truncation, 0.7 is common)",
        ),
        (
            dict(crop=[0, 0, 8]),
            "--crop [0, 0, 8]: give the box as LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. --crop 0,64,512,448",
        ),
        (
            dict(crop=[0, 0, 8, 8.5]),
            "--crop [0, 0, 8, 8.5]: give the box as LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. --crop 0,64,512,448",
        ),
        (dict(compile="fast"), "--compile fast: choose one of off, inductor, cudagraphs"),
    ],
)
def test_bad_options(tmp_path, rosinality_ckpt, tiny_clip_spec, kw, message):
    """The whole message, as the user reads it."""
    import re

    with pytest.raises(NadaError) as e:
        train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, **kw), progress=False)
    assert e.value.for_command_line() == message
    # a Python caller reads the fields it passed, not the flags
    assert str(e.value) == re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), message)
    assert not (tmp_path / "r").exists()


def test_the_smallest_values_are_accepted(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """Each option at its smallest allowed value runs a whole training (one step of one latent, one
    preview, every save), not only passes validation."""
    run = train(
        options(
            rosinality_ckpt,
            tmp_path / "r",
            tiny_clip_spec,
            iterations=1,
            batch=1,
            n_sample=1,
            mixing=0.0,
            auto_layer_batch=1,
            auto_layer_iters=1,
            auto_layer_k=1,
            sample_every=1,
            save_every=1,
            global_weight=0.0,
        ),
        progress=False,
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["iterations_done"] == 1
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1] and len(log[0]["codes"]) == 1
    # one column
    assert np.asarray(Image.open(run / "samples" / "step-000001.png")).shape == (
        2 * 32 + 2,
        32,
        3,
    )
    assert [p.name for p in (run / "snapshots").iterdir()] == ["generator-000001.safetensors"]


def test_existing_run_is_not_overwritten(tmp_path, rosinality_ckpt, tiny_clip_spec):
    train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=1), progress=False)
    before = (tmp_path / "r" / "generator.safetensors").read_bytes()
    with pytest.raises(NadaError, match="already holds a run"):
        train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=1), progress=False)
    assert (tmp_path / "r" / "generator.safetensors").read_bytes() == before


def test_image_guided_target(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from PIL import Image

    styles = tmp_path / "styles"
    styles.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (200 * i, 30, 90)).save(styles / f"s{i}.png")
    run = train(
        options(
            rosinality_ckpt,
            tmp_path / "r",
            tiny_clip_spec,
            iterations=2,
            target=None,
            target_images=str(styles),
        ),
        progress=False,
    )
    assert json.loads((run / "manifest.json").read_text())["target_images"] == str(styles)


def fresh_trainer(tmp_path, ckpt, clip, name="r", **kw):
    opts = options(ckpt, tmp_path / name, clip, **kw)
    return build(opts, RunDir(opts.out), resume=False)


def test_adam_runs_at_four_fifths_lr_with_betas_0_and_099_pow_08(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """Two steps checked against Adam written out by hand (beta1 = 0: the update is g / sqrt(v_hat))."""
    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, layers="all", lr=0.003)
    lr, beta2, eps = 0.003 * 4 / 5, 0.99 ** (4 / 5), 1e-8
    group = trainer.optimizer.param_groups[0]
    assert (
        group["lr"] == pytest.approx(lr)
        and group["betas"] == (0.0, pytest.approx(beta2))
        and group["eps"] == eps
    )
    params = dict(trainer.g_train.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.step()
    g1 = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    after1 = {n: p.detach().clone() for n, p in params.items()}
    trainer.step()
    g2 = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    assert (
        set(g1) == set(g2)
        and "convs.0.conv.weight" in g1
        and not any(n.startswith(("style.", "to_rgb")) for n in g1)
    )
    for n in g1:
        step1 = lr * g1[n] / (g1[n].abs() + eps)  # v_hat = g^2 after one step
        torch.testing.assert_close(after1[n], before[n] - step1, rtol=0, atol=1e-7)
        v_hat = (beta2 * (1 - beta2) * g1[n] ** 2 + (1 - beta2) * g2[n] ** 2) / (1 - beta2**2)
        torch.testing.assert_close(
            params[n].detach(), after1[n] - lr * g2[n] / (v_hat.sqrt() + eps), rtol=0, atol=1e-7
        )
    for n in set(params) - set(g1):
        assert torch.equal(params[n], before[n]), n


def test_mixing_draws_two_latents_per_sample(tmp_path, rosinality_ckpt, tiny_clip_spec):
    mixed = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "m", mixing=1.0, batch=3)._latents(3)
    plain = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "p", mixing=0.0, batch=3)._latents(3)
    assert torch.equal(plain, plain[:, :1].expand_as(plain))  # one w for every code
    for sample in mixed:
        first, last = sample[0], sample[-1]
        assert not torch.equal(first, last)
        owner = [torch.equal(code, first) for code in sample]
        k = owner.index(False)  # codes before the injection index come from w1, the rest from w2
        assert 1 <= k < len(sample) and all(owner[:k]) and all(torch.equal(code, last) for code in sample[k:])


def test_train_torgb_trains_the_torgb_layers(tmp_path, rosinality_ckpt, tiny_clip_spec):
    base = tiny_generator().state_dict()
    for layers in ("all", "auto"):
        run = train(
            options(
                rosinality_ckpt,
                tmp_path / layers,
                tiny_clip_spec,
                layers=layers,
                train_torgb=True,
                iterations=3,
                auto_layer_k=8,
            ),
            progress=False,
        )
        w = weights(run)
        assert not torch.equal(w["to_rgb1.conv.weight"], base["to_rgb1.conv.weight"]), layers
        assert not torch.equal(w["to_rgbs.1.conv.weight"], base["to_rgbs.1.conv.weight"]), layers
        assert torch.equal(w["style.1.weight"], base["style.1.weight"])
    trainer = fresh_trainer(
        tmp_path, rosinality_ckpt, tiny_clip_spec, "fixed", layers="shape", train_torgb=True
    )
    assert trainer.fixed_layers == manual_layers(trainer.g_train, "shape") + trainer.g_train.torgb_names()


def test_fused_training_steps_equal_unfused(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    """The grouped-conv path in training: the same losses and, after three steps, the same weights, up
    to rounding. Tolerances against the magnitudes involved (the losses are about 1; fp32 rounding
    through two networks and three Adam steps moved them by 4e-6 here, 1.2e-5 on another CPU; the
    steps' relative difference was 9e-5 under three instruction sets). A fused path off by 0.1% in
    its style moves the losses by 2e-4 and the steps by 1.5e-2."""
    runs = [
        fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, f"f{fused}", layers="all", fused=fused)
        for fused in (False, True)
    ]
    from nada_train.generator.layers import ModulatedConv2d

    grouped, calls = ModulatedConv2d._forward_grouped, []

    def counted(self, *args):
        calls.append(1)
        return grouped(self, *args)

    monkeypatch.setattr(ModulatedConv2d, "_forward_grouped", counted)
    losses, grouped_calls = [], []
    for t in runs:
        calls.clear()
        losses.append([t.step()["loss"] for _ in range(3)])
        grouped_calls.append(len(calls))
    assert grouped_calls[0] == 0 and grouped_calls[1] > 0  # the fused run took the grouped form
    # and it trained
    assert losses[0] == pytest.approx(losses[1], abs=1e-4) and losses[0][0] - losses[0][2] > 0.05
    start = tiny_generator().state_dict()
    a, b = ({n: p.detach() for n, p in t.g_train.named_parameters()} for t in runs)
    assert relative_step_difference(a, b, start) < 2e-3


def test_bf16_precision_trains_close_to_fp32(tmp_path, rosinality_ckpt, tiny_clip_spec):
    runs = {
        p: fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, p, layers="all", precision=p)
        for p in ("fp32", "bf16")
    }
    grads = {}
    for p, t in runs.items():
        t.step()
        grads[p] = torch.cat([q.grad.flatten() for q in t.g_train.parameters() if q.grad is not None])
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > 0.95
    assert not torch.equal(grads["bf16"], grads["fp32"])  # bf16 really ran: its rounding shows
    losses = {p: [t.step()["loss"] for _ in range(3)] for p, t in runs.items()}
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.1)
    assert max(losses["bf16"]) < 0.9  # it learns (the loss is 1.0 before the first update)
    w = dict(runs["bf16"].g_train.named_parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in w.values())  # weights stay fp32
    with refused("--precision fp16: choose fp32 or bf16"):
        fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "x", precision="fp16")


def test_manifest_records_the_run(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from nada_core.fileio import sha256_file

    run = train(
        options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, iterations=2, auto_layer_k=3), progress=False
    )
    m = json.loads((run / "manifest.json").read_text())
    m.pop("updated")
    opts = TrainOptions.from_json(m["arguments"])
    assert m == {
        "format": "nada-run/1",
        "status": "finished",
        "iterations_done": 2,
        "base": {
            "path": str(rosinality_ckpt.resolve()),
            "sha256": sha256_file(rosinality_ckpt),
            "kind": "rosinality",
        },
        "generator_config": tiny_generator().config.to_dict(),
        "source": "photo",
        "target": "sketch",
        "target_images": None,
        "clip": [
            {
                "name": "nada-test-tiny",
                "pretrained": "random",
                "weight": 1.0,
                "config": "nada-test-tiny",
                "quick_gelu": False,
            }
        ],
        "parametrization": "full",
        "layers": {"auto": {"k": 3, "iters": 1, "batch": 2}},
        "arguments": opts.to_json(),
        "nada_version": "0.1.0",
    }
    assert opts == options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, iterations=2, auto_layer_k=3)
    fixed = train(
        options("random:8", tmp_path / "b", tiny_clip_spec, iterations=1, layers="shape"), progress=False
    )
    m = json.loads((fixed / "manifest.json").read_text())
    assert m["layers"] == "shape" and m["base"] == {"path": "random:8", "sha256": None, "kind": "random"}


def test_saves_come_every_save_every_and_at_the_end(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    saved = []
    real = RunDir.save

    def save(self, generator, state, manifest):
        saved.append((manifest["status"], manifest["iterations_done"], state["iteration"]))
        return real(self, generator, state, manifest)

    monkeypatch.setattr(RunDir, "save", save)
    train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=5, save_every=2, sample_every=3),
        progress=False,
    )
    assert saved == [("running", 0, 0), ("running", 2, 2), ("running", 4, 4), ("finished", 5, 5)]
    samples = sorted(p.name for p in (tmp_path / "r" / "samples").iterdir())
    assert samples == ["step-000000.png", "step-000003.png", "step-000005.png"]


def test_progress_bar_counts_the_run(tmp_path, rosinality_ckpt, tiny_clip_spec, capsys):
    train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=3, layers="all"), progress=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("photo -> sketch: 100%") and "3/3" in last and ("it/s" in last or "s/it" in last)
    assert "loss=0." in last and "s_it=" in last
    # progress on by default
    train(options(rosinality_ckpt, tmp_path / "q", tiny_clip_spec, iterations=2, layers="all"))
    assert "2/2" in capsys.readouterr().err


def test_the_run_owns_all_its_randomness(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """Latents, style mixing and its injection index come from the run's own generator: the global
    torch RNG (which anything else may draw from) changes nothing, and every index 1..n-1 occurs."""
    draws = []
    for global_seed in (1, 99):
        trainer = fresh_trainer(
            tmp_path, rosinality_ckpt, tiny_clip_spec, f"r{global_seed}", mixing=0.5, batch=2
        )
        torch.manual_seed(global_seed)
        draws.append([trainer._latents(2) for _ in range(60)])
    assert all(torch.equal(a, b) for a, b in zip(*draws))
    n = draws[0][0].shape[1]
    indices = set()
    for ws in draws[0]:
        same = [torch.equal(ws[0, c], ws[0, 0]) for c in range(n)]
        if not all(same):
            indices.add(same.index(False))
    assert indices == set(range(1, n))  # never 0: the first code always comes from w1
    # mixing 0.5: some mixed, some not
    assert 0 < sum(not torch.equal(ws[0, -1], ws[0, 0]) for ws in draws[0]) < 60


def test_a_builtin_base_judges_its_runs_after_training(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    """The seam: train() asks the base that owns the checkpoint to evaluate the finished run (text
    targets only), on the run's device."""
    import nada_train.trainer as trainer_module
    from nada_train.bases import BuiltinBase

    calls = []
    base = BuiltinBase(
        name="fake",
        generator=rosinality_ckpt,
        clip=(),
        default_target="sketch",
        evaluate=lambda run_dir, device: calls.append((run_dir, device)) or {},
    )
    monkeypatch.setattr(trainer_module, "base_owning", lambda g: base if base.owns(g) else None)
    run = train(options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, iterations=1), progress=False)
    assert calls == [(run, "cpu")]
    train(options("random:8", tmp_path / "b", tiny_clip_spec, iterations=1), progress=False)
    assert len(calls) == 1  # not its checkpoint
    from PIL import Image

    (tmp_path / "styles").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "styles" / "s.png")
    train(
        options(
            rosinality_ckpt,
            tmp_path / "c",
            tiny_clip_spec,
            iterations=1,
            target=None,
            target_images=str(tmp_path / "styles"),
        ),
        progress=False,
    )
    assert len(calls) == 1  # image-guided: no target to judge
    monkeypatch.setattr(
        trainer_module,
        "base_owning",
        lambda g: BuiltinBase(name="mute", generator=rosinality_ckpt, clip=(), default_target="x"),
    )
    # no evaluate: nothing to call
    mute = train(options(rosinality_ckpt, tmp_path / "d", tiny_clip_spec, iterations=1), progress=False)
    assert len(calls) == 1 and not (mute / "metrics.json").exists()
    assert json.loads((mute / "manifest.json").read_text())["status"] == "finished"


def test_k1_auto_selection_never_picks_a_code_that_trains_nothing(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    """With --auto-layer-k 1 and the last code made to win the selection, every step still trains
    a layer (it raised 'element 0 of tensors does not require grad' when the last code won)."""
    import nada_train.layer_selection as ls

    real = ls.select_codes

    def last_code_wins(g, w, fn, k, iters, lr=0.01, candidates=None, synthesis=None):
        candidates = candidates if candidates is not None else list(range(g.n_latent))
        ranked = sorted(candidates, key=lambda c: -c)  # the highest code first: the last one if allowed
        real(g, w, fn, k, iters, lr, candidates, synthesis)  # still run the real selection
        return ranked[:k]

    monkeypatch.setattr("nada_train.trainer.select_codes", last_code_wins)
    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=2, auto_layer_k=1), progress=False
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    n_latent = tiny_generator().n_latent
    assert [r["codes"] for r in log] == [[n_latent - 2], [n_latent - 2]] and all(r["layers"] for r in log)
    run = train(
        options(
            rosinality_ckpt, tmp_path / "t", tiny_clip_spec, iterations=1, auto_layer_k=1, train_torgb=True
        ),
        progress=False,
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["codes"] == [n_latent - 1] and log[0]["layers"] == [
        f"to_rgbs.{len(tiny_generator().to_rgbs) - 1}"
    ]


def test_save_every_keeps_numbered_snapshots_that_load(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from nada_train.checkpoints import load_generator

    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=5, save_every=2), progress=False
    )
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "generator-000002.safetensors",
        "generator-000004.safetensors",
    ]
    four = train(
        options(rosinality_ckpt, tmp_path / "four", tiny_clip_spec, iterations=4, save_every=100),
        progress=False,
    )
    snapshot = load_generator(run / "snapshots" / "generator-000004.safetensors")
    assert all(torch.equal(v, weights(four)[k]) for k, v in snapshot.generator.state_dict().items())
    with refused("--save-every 0: must be at least 1"):
        train(options(rosinality_ckpt, tmp_path / "bad", tiny_clip_spec, save_every=0), progress=False)


def test_a_crop_box_is_what_clip_samples_and_generate_see(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    """--crop for generators whose content fills part of the frame (LSUN cars): recorded in the run,
    applied before CLIP, in the samples and in nada-generate's images."""
    from PIL import Image

    from nada_train.checkpoints import load_generator
    from nada_train.generator.inference import render

    seen = []
    real = ClipGuide.directional

    def directional(self, frozen, trained, *rest):
        seen.append((tuple(frozen.shape[-2:]), tuple(trained.shape[-2:])))
        return real(self, frozen, trained, *rest)

    monkeypatch.setattr(ClipGuide, "directional", directional)
    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=2, crop=[4, 8, 28, 24]),
        progress=False,
    )
    assert seen == [((16, 24), (16, 24))] * 2  # height 24 - 8, width 28 - 4
    assert json.loads((run / "manifest.json").read_text())["generator_config"]["crop"] == [4, 8, 28, 24]
    grid = np.asarray(Image.open(run / "samples" / "step-000002.png"))
    assert grid.shape == (2 * 16 + 2, 2 * 24 + 2, 3)
    adapted = load_generator(run).generator
    assert adapted.config.crop == (4, 8, 28, 24)
    images = render(adapted, [0, 1], 1.0)
    assert images.shape == (2, 16, 24, 3)
    plain = train(options(rosinality_ckpt, tmp_path / "plain", tiny_clip_spec, iterations=1), progress=False)
    assert load_generator(plain).generator.config.crop is None  # no --crop: the whole frame
    with refused("--crop 4,8,40,24: crop .* is not a box inside the 32x32 image"):
        train(options(rosinality_ckpt, tmp_path / "bad", tiny_clip_spec, crop=[4, 8, 40, 24]), progress=False)


def test_an_exported_cropped_run_serves_the_box(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from nada_export.onnx_export import export_verified, onnx_session
    from nada_train.checkpoints import load_generator

    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=1, crop=[4, 8, 28, 24]),
        progress=False,
    )
    adapted = load_generator(run).generator
    parity = export_verified(adapted, "synthesis", tmp_path / "s.onnx", max_batch=2)
    out = onnx_session(tmp_path / "s.onnx").run(
        None, {"ws": adapted.ws(torch.zeros(2, 32)).detach().numpy()}
    )[0]
    assert parity.passed and out.shape == (2, 16, 24, 3)


def test_the_manifest_names_the_base_by_its_absolute_path(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    monkeypatch.chdir(rosinality_ckpt.parent)
    run = train(
        options(rosinality_ckpt.name, tmp_path / "rel", tiny_clip_spec, iterations=1, layers="shape"),
        progress=False,
    )
    assert json.loads((run / "manifest.json").read_text())["base"]["path"] == str(rosinality_ckpt.resolve())


def test_a_non_finite_gradient_stops_at_its_iteration(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    """A finite loss whose gradient is not (an inf reaching one weight's grad at the second step)."""
    real = ClipGuide.directional
    calls = {"n": 0}

    def inf_gradient_on_second(self, f, t, *rest):
        calls["n"] += 1
        loss, parts = real(self, f, t, *rest)
        if calls["n"] == 2:
            poison = torch.zeros((), requires_grad=True)
            t.register_hook(lambda g: g * float("inf"))
            loss = loss + 0 * poison
        return loss, parts

    monkeypatch.setattr(ClipGuide, "directional", inf_gradient_on_second)
    with pytest.raises(
        NadaError, match=r"^gradient is not finite at iteration 2; the last good state .iteration 1"
    ):
        train(
            options(
                rosinality_ckpt, tmp_path / "g", tiny_clip_spec, iterations=3, layers="all", save_every=1
            ),
            progress=False,
        )


def test_the_step_passes_the_global_weight(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    seen = []
    real = ClipGuide.directional

    def record(self, f, t, *rest):
        seen.append(rest)
        return real(self, f, t, *rest)

    monkeypatch.setattr(ClipGuide, "directional", record)
    train(
        options(
            rosinality_ckpt, tmp_path / "w", tiny_clip_spec, iterations=1, layers="all", global_weight=0.3
        ),
        progress=False,
    )
    assert seen == [(0.3,)]


def test_the_anchor_weight_adds_the_anchor_to_the_loss_and_its_gradient_to_the_step(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """Each step's loss is the CLIP loss plus anchor_weight x the anchor between that step's frozen and
    trained images (0 at the first step: the two generators are equal), and the anchor's gradient moves
    the weights: the same run without it ends elsewhere."""
    from nada_train.checkpoints import load_generator

    runs = {}
    for weight in (0.0, 50.0):
        runs[weight] = train(
            options(
                rosinality_ckpt,
                tmp_path / f"a{weight}",
                tiny_clip_spec,
                iterations=3,
                layers="all",
                anchor_weight=weight,
                save_every=3,
            ),
            progress=False,
        )
    plain_log, log = (
        [json.loads(line) for line in (runs[w] / "log.jsonl").read_text().splitlines()] for w in runs
    )
    assert log[0]["anchor_loss"] == 0.0 and all(r["anchor_loss"] > 0 for r in log[1:])
    for r in log:
        clip = sum(r["clip_losses"].values())
        assert r["loss"] == pytest.approx(clip + 50.0 * r["anchor_loss"], rel=1e-5)
    assert "anchor_loss" not in plain_log[-1]
    plain, anchored = (load_generator(runs[w]).generator.state_dict() for w in runs)
    assert any(not torch.equal(plain[k], anchored[k]) for k in plain)
    assert plain_log[0]["loss"] == pytest.approx(
        log[0]["loss"], rel=1e-6
    )  # the same run until the anchor acts


def test_each_log_line_holds_the_step_its_losses_layers_and_phase_times(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    import time

    t0 = time.perf_counter()
    run = train(
        options(rosinality_ckpt, tmp_path / "log", tiny_clip_spec, iterations=2, auto_layer_k=2),
        progress=False,
    )
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    phases = ("layer_selection", "generator_forward", "clip_forward", "backward", "optimizer")
    for r in log:
        assert set(r) == {"step", "loss", "clip_losses", "layers", "seconds", "phases", "codes"}
        assert (
            r["clip_losses"] == {"nada-test-tiny:random": pytest.approx(r["loss"])} and len(r["codes"]) == 2
        )
        assert tuple(r["phases"]) == phases and all(0 <= r["phases"][p] < wall for p in phases)
        assert 0 < r["seconds"] < wall and sum(r["phases"].values()) == pytest.approx(r["seconds"], rel=1e-6)


def test_mixing_injects_at_every_code_but_the_first(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "mix", mixing=1.0)
    seen = []
    real = trainer.g_frozen.mix
    monkeypatch.setattr(
        trainer.g_frozen, "mix", lambda w1, w2, index: seen.append(index) or real(w1, w2, index)
    )
    for _ in range(200):
        trainer._latents(1)
    assert set(seen) == set(range(1, trainer.g_train.n_latent))  # index 0 would take every code from w2


def test_the_frozen_copy_never_asks_for_gradients(tmp_path, rosinality_ckpt, tiny_clip_spec):
    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "frozen", layers="all")
    trainer.step()
    assert not any(p.requires_grad or p.grad is not None for p in trainer.g_frozen.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answers where no GPU is visible")
def test_devices_are_resolved_or_refused_in_one_line():
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with refused("^--device cuda:1: CUDA is not available on this machine; use --device cpu$"):
        resolve_device("cuda:1")
    with refused("^--device 'gpu0': not a device; use auto, cpu, cuda or cuda:N$"):
        resolve_device("gpu0")


class Note:
    """A Python object beside the weights: a torch file that needs --allow-pickle."""


def test_allow_pickle_reaches_the_loader(tmp_path, tiny_clip_spec):
    g = tiny_generator()
    torch.save({"g_ema": g.state_dict(), "note": Note()}, tmp_path / "pickled.pt")
    with pytest.raises(NadaError, match="would run code when loaded"):
        train(
            options(
                tmp_path / "pickled.pt", tmp_path / "refused", tiny_clip_spec, iterations=1, layers="all"
            ),
            progress=False,
        )
    run = train(
        options(
            tmp_path / "pickled.pt",
            tmp_path / "trusted",
            tiny_clip_spec,
            iterations=1,
            layers="all",
            allow_pickle=True,
        ),
        progress=False,
    )
    assert (run / "generator.safetensors").exists()


def test_a_run_directory_is_not_a_base(tmp_path, rosinality_ckpt, tiny_clip_spec):
    run = train(
        options(rosinality_ckpt, tmp_path / "first", tiny_clip_spec, iterations=1, layers="all"),
        progress=False,
    )
    with pytest.raises(NadaError, match="is a run directory; adapt its base, or export/generate from it"):
        train(options(run, tmp_path / "second", tiny_clip_spec, iterations=1), progress=False)


def test_resume_refuses_a_base_that_changed(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from nada_train.checkpoints import save_rosinality

    run = train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=1, layers="all"), progress=False
    )
    other = tiny_generator()
    with torch.no_grad():
        other.conv1.conv.weight.add_(1.0)
    save_rosinality(other, rosinality_ckpt)
    with pytest.raises(NadaError, match="changed since the run started .sha256 differs"):
        train(
            TrainOptions.from_json(
                {**json.loads((run / "manifest.json").read_text())["arguments"], "iterations": 2}
            ),
            resume=True,
            progress=False,
        )


def test_the_guide_gets_the_runs_texts_templates_and_seeded_source_images(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """The text direction is the one set_text_target gives for the run's source, target and
    templates; the image-guided direction uses 16 source images drawn from the run's seed."""
    from PIL import Image

    from nada_train.checkpoints import load_generator
    from nada_train.clip import load_clip
    from nada_train.losses import load_style_images

    templates = ["a drawing of a {}.", "{} in a picture"]
    trainer = fresh_trainer(
        tmp_path, rosinality_ckpt, tiny_clip_spec, "text", target="neon sign", templates=templates
    )
    want = ClipGuide([load_clip(parse_clip_spec(tiny_clip_spec))])
    want.set_text_target("photo", "neon sign", templates)
    assert torch.allclose(trainer.guide.directions[0], want.directions[0])
    assert torch.allclose(trainer.guide.target_texts[0], want.target_texts[0])

    styles = tmp_path / "styles"
    styles.mkdir()
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        styles / "a.png"
    )
    guided = [
        fresh_trainer(
            tmp_path,
            rosinality_ckpt,
            tiny_clip_spec,
            f"img{i}",
            target=None,
            target_images=str(styles),
            seed=5,
        )
        for i in range(2)
    ]
    z = torch.randn(16, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        source = load_generator(rosinality_ckpt).generator(z)
    want.set_image_target(source, load_style_images(styles))
    for t in guided:
        assert torch.allclose(t.guide.directions[0], want.directions[0], atol=1e-6)


def test_resume_states_that_cannot_continue_are_refused_in_one_line(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    import re

    def resume(run):
        return train(
            TrainOptions.from_json(
                {**json.loads((run / "manifest.json").read_text())["arguments"], "iterations": 2}
            ),
            resume=True,
            progress=False,
        )

    run = train(
        options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec, iterations=1, layers="all"), progress=False
    )
    other = train(
        options("random:8", tmp_path / "b", tiny_clip_spec, iterations=1, layers="all"), progress=False
    )
    state_a = run / "state" / "resume.pt"
    saved = state_a.read_bytes()
    state_a.write_bytes((other / "state" / "resume.pt").read_bytes())  # another generator's weights
    try:  # what PyTorch says of those weights, as the message quotes it (one line, 200 characters)
        tiny_generator().load_state_dict(torch.load(state_a, weights_only=True)["generator"])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
    assert len(detail) == 200
    with refused(
        f"^--resume '{re.escape(str(run))}': its saved weights do not fit the base checkpoint "
        f"\\({re.escape(detail)}\\)$"
    ):
        resume(run)
    state = torch.load(io.BytesIO(saved), weights_only=True)
    del state["generator"]
    torch.save(state, state_a)
    with refused(
        f"^--resume '{re.escape(str(run))}': its resume state was written by an older nada without the "
        f"weights; start a new run from {re.escape(str(run / 'generator.safetensors'))} instead$"
    ):
        resume(run)


def test_adam_counts_only_the_steps_that_trained_a_layer(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    """Under --layers auto a layer left out of a step has no gradient (None, not zeros), so Adam skips
    it: its step count and moments stay where they were, and its bias correction stays right for
    the next step that picks it. A zero gradient would still advance Adam's count and decay its
    second moment."""
    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, layers="auto")
    # what selection picks, step by step
    choices = iter([["convs.0", "convs.1"], ["convs.1"], ["convs.0"], ["convs.1"]])
    monkeypatch.setattr(trainer, "choose_layers", lambda: (next(choices), None))
    modules = dict(trainer.g_train.named_modules())
    name_of = {id(p): n for n, p in trainer.g_train.named_parameters()}
    trained: dict[str, int] = {}
    v_before = None
    for i in range(4):
        record = trainer.step()
        for layer in record["layers"]:
            for p in modules[layer].parameters():
                trained[name_of[id(p)]] = trained.get(name_of[id(p)], 0) + 1
        if i == 0:
            v_before = trainer.optimizer.state[modules["convs.0"].conv.weight]["exp_avg_sq"].clone()
        if i == 1:  # convs.0 sat this step out: its second moment did not decay
            assert torch.equal(
                trainer.optimizer.state[modules["convs.0"].conv.weight]["exp_avg_sq"], v_before
            )
    counted = {name_of[id(p)]: int(state["step"]) for p, state in trainer.optimizer.state.items()}
    assert counted == trained and trained["convs.0.conv.weight"] == 2 and trained["convs.1.conv.weight"] == 3


def test_the_frozen_memo_renders_once_per_codes_and_encodes_once_per_model():
    """FrozenMemo: the same codes again reuse the images (and their embeddings); other codes, or
    codes of another shape, render anew; images that are not the memo's are encoded as they are."""
    from nada_train.trainer import FrozenMemo

    renders, encodes = [], []

    def synthesize(ws):
        renders.append(ws.shape)
        return ws.sum(dim=(1, 2)).view(-1, 1, 1, 1) * torch.ones(len(ws), 3, 2, 2)

    def encode(images):
        encodes.append(images.shape)
        return images.flatten(1)

    memo, ws = FrozenMemo(), torch.randn(2, 3, 4)
    first = memo.synthesis(synthesize, ws)
    assert memo.synthesis(synthesize, ws.clone()) is first and len(renders) == 1
    model_a, model_b = object(), object()
    ea = memo.embedding(model_a, encode, first)
    assert memo.embedding(model_a, encode, first) is ea and len(encodes) == 1
    assert memo.embedding(model_b, encode, first) is not ea and len(encodes) == 2
    other = torch.randn(5, 3, 2, 2)
    assert torch.equal(memo.embedding(model_a, encode, other), other.flatten(1)) and len(encodes) == 3
    memo.synthesis(synthesize, ws[:1])  # another batch size
    memo.synthesis(synthesize, ws[:1] + 1)  # other codes
    assert renders == [(2, 3, 4), (1, 3, 4), (1, 3, 4)]
    memo.embedding(model_a, encode, memo.images)  # a new step: embeddings anew
    assert len(encodes) == 4


def test_each_sample_grid_is_the_frozen_row_over_the_trained_row_the_frozen_drawn_once(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    """The grid's top row never changes in a run, so it is drawn once; the bottom row is always the
    generator being trained as it is now."""
    from PIL import Image

    from nada_core.pngs import grid

    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, n_sample=3)
    drawn, real = [], trainer.sample_row
    trainer.sample_row = lambda g: drawn.append(g) or real(g)
    first = trainer.write_samples()
    with torch.no_grad():
        for p in trainer.g_train.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.iteration = 1
    second = trainer.write_samples()
    assert drawn == [trainer.g_frozen, trainer.g_train, trainer.g_train]
    for path in (first, second):
        want = grid(torch.cat([real(trainer.g_frozen), real(trainer.g_train)]).numpy(), rows=2)
        same = np.array_equal(np.asarray(Image.open(path)), want)
        assert same == (path == second), path  # the first grid shows g_train before it changed


def test_the_callback_hears_each_step_and_finished_each_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """run_to_end: exactly `iterations` steps, a Progress per step saying what the log says, and each
    finished trainer passed to `finished` once."""
    from tqdm import tqdm

    from nada_train.loop import run_to_end

    trainer = fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, iterations=3, sample_every=2)
    trainer.start()
    heard, done = [], []
    run_to_end([trainer], tqdm(disable=True), heard.append, done.append)
    assert trainer.iteration == 3 and done == [trainer]
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [p.step for p in heard] == [1, 2, 3] and len(log) == 3
    for p, line in zip(heard, log):
        assert (p.run, p.target, p.iterations) == (trainer.run.path, "sketch", 3)
        assert (
            p.loss == line["loss"] and p.clip_losses == line["clip_losses"] and p.seconds == line["seconds"]
        )
    samples = [p.sample.name for p in heard]  # the start's grid until the first one falls due, then each
    assert samples == ["step-000000.png", "step-000002.png", "step-000003.png"]
    assert all(p.sample.exists() and p.sample.parent == trainer.run.path / "samples" for p in heard)
    run_to_end([trainer], tqdm(disable=True), heard.append, done.append)  # a finished run steps no more
    assert trainer.iteration == 3 and len(heard) == 3 and done == [trainer, trainer]
    resumed = build(trainer.opts, RunDir(trainer.opts.out), resume=True)
    assert resumed.latest_sample == heard[-1].sample  # a resumed run knows its newest grid
    assert fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "new").latest_sample is None


def test_train_passes_its_callback_every_step(tmp_path, rosinality_ckpt, tiny_clip_spec):
    heard = []
    train(
        options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=2),
        progress=False,
        callback=heard.append,
    )
    assert [p.step for p in heard] == [1, 2] and heard[0].run == tmp_path / "r"
