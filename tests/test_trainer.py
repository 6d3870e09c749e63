import json

import pytest
import torch
from safetensors.torch import load_file

from nada_train.clip import load_clip, parse_clip_spec
from nada_train.errors import NadaError
from nada_train.layer_selection import manual_layers, set_trainable
from nada_train.losses import ClipGuide
from nada_train.trainer import Trainer, TrainOptions, train
from tests.conftest import tiny_generator


def options(ckpt, out, clip, **kw):
    base = dict(generator=str(ckpt), out=str(out), target="sketch", clip=[parse_clip_spec(clip)], iterations=4,
                n_sample=2, sample_every=2, save_every=2, device="cpu", auto_layer_batch=2)
    base.update(kw)
    return TrainOptions(**base)


def test_steps_lower_directional_loss_on_fixed_batch(tiny_clip_spec):
    guide = ClipGuide([load_clip(parse_clip_spec(tiny_clip_spec))])
    guide.set_text_target("photo", "sketch")
    frozen, trainable = tiny_generator(), tiny_generator()
    params = set_trainable(trainable, manual_layers(trainable, "all"))
    opt = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
    ws = frozen.broadcast(frozen.mapping(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)))).detach()
    with torch.no_grad():
        f = frozen.synthesis(ws)
    losses = []
    for _ in range(8):
        loss, _ = guide.directional(f, trainable.synthesis(ws))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05, losses


def weights(run):
    return load_file(str(run / "generator.safetensors"))


def test_run_outputs_and_interrupted_resume_equals_straight_run(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    straight = train(options(rosinality_ckpt, tmp_path / "a", tiny_clip_spec), progress=False)
    manifest = json.loads((straight / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["iterations_done"] == 4
    assert manifest["base"]["sha256"] and manifest["target"] == "sketch"
    assert manifest["clip"] == [{"name": "nada-test-tiny", "pretrained": "random", "weight": 1.0}]
    assert sorted(p.name for p in (straight / "samples").iterdir()) == ["step-000000.png", "step-000002.png", "step-000004.png"]
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["layers"] and r["seconds"] > 0 for r in log)
    assert not list(straight.rglob("*.tmp"))

    real_step = Trainer.step

    def interrupt_at_3(self):
        if self.iteration == 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", interrupt_at_3)
    with pytest.raises(NadaError, match="interrupted at iteration 2"):
        train(options(rosinality_ckpt, tmp_path / "b", tiny_clip_spec), progress=False)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Trainer, "step", real_step)
    opts = TrainOptions.from_json(json.loads((tmp_path / "b" / "manifest.json").read_text())["arguments"])
    resumed = train(opts, resume=True, progress=False)

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = tiny_generator().state_dict()
    assert not torch.equal(a["convs.0.conv.weight"], base["convs.0.conv.weight"])  # it did train
    assert torch.equal(a["style.1.weight"], base["style.1.weight"])  # mapping frozen
    assert torch.equal(a["to_rgbs.0.conv.weight"], base["to_rgbs.0.conv.weight"])  # ToRGB frozen


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    good = train(options(rosinality_ckpt, tmp_path / "good", tiny_clip_spec, iterations=2, layers="all"), progress=False)
    real = ClipGuide.directional
    calls = {"n": 0}

    def nan_on_third(self, f, t, *rest):
        calls["n"] += 1
        loss, parts = real(self, f, t, *rest)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(ClipGuide, "directional", nan_on_third)
    with pytest.raises(NadaError, match="last good state .iteration 2"):
        train(options(rosinality_ckpt, tmp_path / "bad", tiny_clip_spec, layers="all"), progress=False)
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    assert manifest["status"] == "failed-nan" and manifest["iterations_done"] == 2
    a, b = weights(good), weights(tmp_path / "bad")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kw,match", [
    (dict(target=""), "--target is empty"),
    (dict(target="Photo"), "both 'photo'"),
    (dict(source=" "), "--source is empty"),
    (dict(layers="middle"), "--layers 'middle'"),
    (dict(mixing=2.0), "--mixing"),
    (dict(iterations=0), "--iterations 0"),
])
def test_bad_options(tmp_path, rosinality_ckpt, tiny_clip_spec, kw, match):
    with pytest.raises(NadaError, match=match):
        train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, **kw), progress=False)
    assert not (tmp_path / "r").exists()


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
    run = train(options(rosinality_ckpt, tmp_path / "r", tiny_clip_spec, iterations=2, target=None, target_images=str(styles)), progress=False)
    assert json.loads((run / "manifest.json").read_text())["target_images"] == str(styles)
