"""The inference copy (reduced-precision convolutions with fp32 styles and demodulation, channels_last)
against the plain fp32 generator, its precision gate, and nada-generate's choice of path."""

import numpy as np
import pytest
import torch

from nada_core.errors import NadaError
from nada_core.seeds import z_batch
from nada_train.generator.inference import fastest_copy, inference_copy, precision_gate, render
from nada_train.generator.layers import ModulatedConv2d
from tests.conftest import refused, tiny_generator
from tests.test_stylegan3 import sg3


@pytest.mark.parametrize("demodulate,upsample,kernel", [(True, False, 3), (True, True, 3), (False, False, 1)])
def test_the_reduced_path_is_the_plain_one_in_exact_arithmetic(demodulate, upsample, kernel):
    """Fed fp32, the path the inference copy takes (style divided by its peak, the peak given back
    with the demodulation) equals the plain modulated conv: only the rounding may differ."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(12, 7, kernel, 16, demodulate=demodulate, upsample=upsample)
    x, w = torch.randn(3, 12, 8, 8), torch.randn(3, 16) * 3
    with torch.no_grad():
        style, weight = conv.modulation(w), conv.weight[0] * conv.scale
        want = conv(x, w)
        got = conv._forward_reduced(x, style, weight)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert want.abs().max() > 0.1


def test_fp16_activations_that_would_overflow_stay_finite():
    """Large styles on large activations overflow fp16 (65,504) when the style multiplies the
    activations as they are; the inference copy's normalised style keeps them finite and close to fp32."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(256, 8, 3, 16)
    with torch.no_grad():
        conv.modulation.bias.fill_(2000.0)  # styles of about 2,000
    x, w = torch.randn(2, 256, 6, 6) * 60, torch.randn(2, 16)
    with torch.no_grad():
        want = conv(x, w)
        style, weight = conv.modulation(w), conv.weight[0] * conv.scale
        as_is = torch.nn.functional.conv2d((x * style[:, :, None, None]).half(), weight.half(), padding=1)
        got = conv._forward_reduced(x.half(), style, weight.half())
    assert not torch.isfinite(as_is).all()
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


def test_the_copy_keeps_the_sensitive_parts_fp32_and_leaves_the_original_alone():
    g = tiny_generator()
    fast = inference_copy(g, "bf16", channels_last=True)
    dtypes = {name: p.dtype for name, p in fast.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in dtypes if n.startswith("style.") or ".modulation." in n)
    assert dtypes["to_rgb1.bias"] == dtypes["to_rgbs.0.bias"] == torch.float32
    assert (
        dtypes["convs.0.conv.weight"]
        == dtypes["input.input"]
        == dtypes["convs.1.activate.bias"]
        == torch.bfloat16
    )
    assert fast.w_avg.dtype == torch.float32 and not any(p.requires_grad for p in fast.parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in g.parameters())
    with torch.no_grad():
        image = fast(torch.from_numpy(z_batch([0, 1], g.config.z_dim)), noise_mode="random")
    assert image.dtype == torch.float32 and image.shape == (2, 3, 32, 32)


def test_fp32_channels_last_renders_the_plain_images():
    g = tiny_generator()
    want = render(g, list(range(6)), 0.7)
    got = render(inference_copy(g, "fp32", channels_last=True), list(range(6)), 0.7)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1 and want.std() > 5


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_gate_passes_the_reduced_precisions_and_reports_the_worst_pixel(precision):
    g = tiny_generator()
    gate = precision_gate(g, inference_copy(g, precision), precision)
    assert gate.passed and gate.psnr_db >= 40
    got, want = render(inference_copy(g, precision), list(range(16)), 1.0), render(g, list(range(16)), 1.0)
    assert gate.max_level_difference == np.abs(got.astype(int) - want.astype(int)).max() > 0


def test_a_broken_reduced_path_is_refused(monkeypatch):
    """A reduced-precision path that also rounds its styles to one decimal fails the gate, and
    nada-generate refuses it by name (auto falls back to fp32 instead, but only on a GPU)."""
    reduced = ModulatedConv2d._forward_reduced
    monkeypatch.setattr(
        ModulatedConv2d, "_forward_reduced", lambda self, x, s, w: reduced(self, x, (s * 10).round() / 10, w)
    )
    g = tiny_generator()
    assert not precision_gate(g, inference_copy(g, "fp16"), "fp16").passed
    with refused(r"--precision fp16: its images drift too far from fp32's .*PSNR"):
        fastest_copy(g, "fp16")
    fast, how = fastest_copy(g, "auto")  # the CPU renders fp32
    assert how == "fp32" and next(fast.parameters()).dtype == torch.float32


def test_stylegan3_is_refused_reduced_precision_in_one_line():
    with pytest.raises(NadaError, match="reduced precision and channels_last are built for StyleGAN2 bases"):
        inference_copy(sg3(), "fp16")
    assert fastest_copy(sg3(), "auto")[1] == "fp32"


def test_nada_generate_renders_at_the_precision_asked(tmp_path, rosinality_ckpt, monkeypatch, capsys):
    from tests.test_cli import run_in_process

    code, out, err = run_in_process(
        monkeypatch,
        capsys,
        "nada-generate",
        str(rosinality_ckpt),
        "--seeds",
        "0-1",
        "--precision",
        "bf16",
        "--out",
        str(tmp_path / "bf16"),
    )
    assert code == 0, err
    assert (
        out.startswith(f"wrote 2 images to {tmp_path / 'bf16'} (bf16: PSNR")
        and (tmp_path / "bf16" / "seed0001.png").exists()
    )


def test_the_gate_reads_as_one_line_and_its_psnr_is_against_255():
    from nada_train.generator.inference import Gate

    assert Gate("fp16", 41.26, 7).describe() == (
        "fp16: PSNR 41.3 dB against fp32 on seeds 0-15 (limit 40 dB), largest pixel difference 7 levels"
    )
    g = tiny_generator()
    fast = inference_copy(g, "bf16")
    got, want = (render(x, list(range(16)), 1.0).astype(np.float64) for x in (fast, g))
    mse = ((got - want) ** 2).reshape(16, -1).mean(1)
    assert precision_gate(g, fast, "bf16").psnr_db == pytest.approx(
        float(np.min(10 * np.log10(255.0**2 / mse))), rel=1e-9
    )


def test_the_copy_and_path_refusals_are_whole_lines(monkeypatch):
    g = tiny_generator()
    with pytest.raises(NadaError) as e:
        inference_copy(g, "fp8")
    assert e.value.for_command_line() == "--precision fp8: choose fp32, fp16 or bf16"
    with pytest.raises(NadaError) as e:
        inference_copy(sg3(), "bf16")
    assert e.value.for_command_line() == (
        "--precision bf16: reduced precision and channels_last are built for StyleGAN2 bases; render this "
        "StyleGAN3 base at fp32"
    )
    reduced = ModulatedConv2d._forward_reduced
    monkeypatch.setattr(
        ModulatedConv2d, "_forward_reduced", lambda self, x, s, w: reduced(self, x, (s * 10).round() / 10, w)
    )
    gate = precision_gate(g, inference_copy(g, "fp16"), "fp16")
    with pytest.raises(NadaError) as e:
        fastest_copy(g, "fp16")
    assert (
        e.value.for_command_line()
        == f"--precision fp16: its images drift too far from fp32's ({gate.describe()}); render at fp32 or "
        "with --precision auto"
    )


@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_on_the_cpu_no_path_is_channels_last(precision):
    """channels_last pays on a GPU's tensor cores; on the CPU every path keeps the default layout,
    and fp32 asked for by name is the plain copy, described as fp32."""
    g = tiny_generator()
    fast, how = fastest_copy(g, precision)
    assert fast.input.input.is_contiguous() and fast is not g
    if precision != "fp16":
        assert how == "fp32" and all(p.dtype == torch.float32 for p in fast.parameters())


def test_the_defaults_are_the_plain_fp32_copy_and_auto():
    """What a notebook gets without arguments: inference_copy an fp32 copy in the default layout,
    fastest_copy the automatic choice (fp32 on the CPU)."""
    g = tiny_generator()
    plain = inference_copy(g)
    assert plain is not g and plain.input.input.is_contiguous()
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in plain.parameters())
    assert fastest_copy(g)[1] == "fp32"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp16_and_bf16_weights_take_the_reduced_path_and_refuse_the_fused_one(dtype):
    """The form follows the weights: an inference copy's conv (weights cast, modulation fp32) takes
    the reduced path with nothing switched on; the grouped form, fp32 only, refuses it in one line."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(12, 7, 3, 16)
    conv.weight.data = conv.weight.data.to(dtype)
    x, w = torch.randn(3, 12, 8, 8).to(dtype), torch.randn(3, 16)
    with torch.no_grad():
        want = conv._forward_reduced(x, conv.modulation(w), conv.weight[0] * conv.scale)
        assert torch.equal(conv(x, w), want)
        with pytest.raises(ValueError) as e:
            conv(x, w, fused=True)
        assert str(e.value) == "the fused (grouped) form is fp32 only; an fp16/bf16 copy renders unfused"
        with pytest.raises(AssertionError, match=r"\(\(3, 11, 8, 8\), 12\)"):  # channels named
            conv(x[:, :11], w)


def test_a_channels_last_copy_renders_channels_last_and_the_same_images():
    """channels_last is the copy's data (its constant input stored so), not a switch: the activations
    after it are channels_last and the images are the default layout's."""
    g = tiny_generator()
    fast = inference_copy(g, channels_last=True)
    ws = g.ws(torch.randn(2, 32))
    seen = []
    hook = fast.convs[0].register_forward_hook(
        lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        torch.testing.assert_close(fast.synthesis(ws), g.synthesis(ws), rtol=1e-5, atol=1e-5)
    hook.remove()
    assert seen == [True] and g.input.input.is_contiguous()  # the original untouched
    hook = g.convs[0].register_forward_hook(
        lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        g.synthesis(ws)
    hook.remove()
    assert seen == [True, False]  # and the plain generator's activations keep the default layout


def fp16_channels_last(g) -> bool:
    layout = torch.channels_last
    return g.convs[0].conv.weight.dtype == torch.float16 and g.input.input.is_contiguous(memory_format=layout)


def test_on_a_gpu_auto_takes_fp16_channels_last_where_the_gate_passes(monkeypatch):
    """The GPU's choice, made on the CPU (on_gpu=True): auto renders fp16 channels_last when the gate
    passes and says so; when it fails, fp32 channels_last with the refusal in its line; a named
    precision is channels_last too; a StyleGAN3 base stays the plain fp32 copy."""
    g = tiny_generator(size=8)
    fast, how = fastest_copy(g, "auto", on_gpu=True)
    assert fp16_channels_last(fast) and how == precision_gate(g, fast, "fp16").describe()
    named, how = fastest_copy(g, "bf16", on_gpu=True)
    assert named.convs[0].conv.weight.dtype == torch.bfloat16 and how.startswith("bf16: PSNR")
    assert named.input.input.is_contiguous(memory_format=torch.channels_last)
    plain, how = fastest_copy(g, "fp32", on_gpu=True)
    assert how == "fp32" and plain.input.input.is_contiguous(memory_format=torch.channels_last)
    assert plain.convs[0].conv.weight.dtype == torch.float32
    sg, how = fastest_copy(sg3(), "auto", on_gpu=True)
    assert how == "fp32" and all(p.dtype == torch.float32 for p in sg.parameters())

    reduced = ModulatedConv2d._forward_reduced
    monkeypatch.setattr(
        ModulatedConv2d, "_forward_reduced", lambda self, x, s, w: reduced(self, x, (s * 10).round() / 10, w)
    )
    gate = precision_gate(g, inference_copy(g, "fp16", channels_last=True), "fp16")
    fallback, how = fastest_copy(g, "auto", on_gpu=True)
    assert how == f"fp32 (fp16 refused: {gate.describe()})"
    assert fallback.convs[0].conv.weight.dtype == torch.float32
    assert fallback.input.input.is_contiguous(memory_format=torch.channels_last)


def test_unknown_noise_and_render_precision_are_refused_in_one_line():
    from nada_train.generator.inference import check_noise, check_render_precision

    with pytest.raises(NadaError) as e:
        check_noise("loud")
    assert e.value.for_command_line() == "--noise loud: choose const, random or none"
    with pytest.raises(NadaError) as e:
        check_render_precision("fp8")
    assert e.value.for_command_line() == "--precision fp8: choose auto, fp32, fp16 or bf16"
    with pytest.raises(NadaError, match="noise loud: choose"):
        render(tiny_generator(size=8), [0], 1.0, noise="loud")
