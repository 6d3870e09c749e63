"""nada_train.compiled's wiring, without compiling: which torch.compile call each --compile mode
makes, when CUDA graphs are told a step begins, and which gradients a compiled step drops.
tests/test_compiled.py runs the real compiled step (slow tier)."""

import pytest
import torch

import nada_train.compiled as compiled_module
from nada_core.errors import NadaError
from nada_train.compiled import check_compile, compiled, drop_unchosen_gradients, step_begins


def fn(x):
    return x + 1


@pytest.fixture
def compile_calls(monkeypatch):
    calls = []

    def recorded(f, **kwargs):
        calls.append((f, kwargs))
        return "compiled " + f.__name__

    monkeypatch.setattr(torch, "compile", recorded)
    return calls


def test_off_is_the_function_itself(compile_calls):
    assert compiled(fn, "off") is fn and compile_calls == []


@pytest.mark.parametrize(
    "mode,backend,want",
    [
        ("inductor", "inductor", {"mode": None, "dynamic": False}),
        (
            "cudagraphs",
            "inductor",
            {"mode": "reduce-overhead", "dynamic": False},
        ),  # Inductor's CUDA-graph mode
        (
            "inductor",
            "aot_eager",
            {"backend": "aot_eager", "dynamic": False},
        ),  # the tests' backend: no code generation
    ],
)
def test_each_mode_makes_its_torch_compile_call(compile_calls, monkeypatch, mode, backend, want):
    monkeypatch.setattr(compiled_module, "BACKEND", backend)
    assert compiled(fn, mode) == "compiled fn"
    assert compile_calls == [(fn, want)]


def test_cuda_graphs_alone_are_told_a_step_begins(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    step_begins("off")
    step_begins("inductor")
    assert marks == []
    step_begins("cudagraphs")
    assert marks == [1]


def test_cuda_graphs_need_a_cuda_device():
    check_compile("inductor", torch.device("cpu"))
    check_compile("off", torch.device("cpu"))
    check_compile("cudagraphs", torch.device("cuda"))  # a CUDA device is accepted (no GPU needed to say so)
    with pytest.raises(NadaError) as e:
        check_compile("cudagraphs", torch.device("cpu"))
    assert e.value.for_command_line() == (
        "--compile cudagraphs: CUDA graphs need a CUDA device, this run is on cpu; use --compile inductor"
    )


def test_a_compiled_step_keeps_only_the_chosen_layers_gradients():
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(3)]
    for p in params:
        p.grad = torch.full((2,), 0.5)
    drop_unchosen_gradients(params, [params[1]])
    assert params[0].grad is None and params[2].grad is None
    assert torch.equal(params[1].grad, torch.full((2,), 0.5))


def test_a_compiled_modes_step_bookkeeping_equals_the_eager_step(
    tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch
):
    """--compile inductor's step with the compile itself left out (the functions run eagerly): every
    layer asks for a gradient, the unchosen ones' are dropped before Adam, and the run moves exactly
    as the eager one, unchosen layers untouched."""
    import nada_train.losses
    import nada_train.trainer
    from tests.test_trainer import fresh_trainer

    modes = []
    for module in (nada_train.trainer, nada_train.losses):
        monkeypatch.setattr(module, "compiled", lambda fn, mode: modes.append(mode) or fn)
    runs = {
        mode: fresh_trainer(
            tmp_path, rosinality_ckpt, tiny_clip_spec, mode, layers="auto", auto_layer_k=2, compile=mode
        )
        for mode in ("off", "inductor")
    }
    seen = []
    real_drop = nada_train.trainer.drop_unchosen_gradients

    def drop(params, chosen):
        seen.append(sum(p.grad is not None for p in params))  # before: every layer has one
        real_drop(params, chosen)

    monkeypatch.setattr(nada_train.trainer, "drop_unchosen_gradients", drop)
    # each run compiles (or not) both syntheses and its CLIP's image encoder, in its own mode
    assert sorted(modes) == ["inductor"] * 3 + ["off"] * 3
    records = {mode: [t.step() for _ in range(3)] for mode, t in runs.items()}
    assert [r["layers"] for r in records["inductor"]] == [r["layers"] for r in records["off"]]
    eager, bookkept = (dict(t.g_train.named_parameters()) for t in runs.values())
    assert all(torch.equal(eager[n], bookkept[n]) for n in eager)
    params = runs["inductor"].params
    assert seen == [len(params)] * 3  # the eager run drops nothing: it never calls
    last = set(records["inductor"][-1]["layers"])
    with_grad = {n for n, p in bookkept.items() if p.grad is not None}
    assert with_grad and all(any(n.startswith(layer + ".") for layer in last) for n in with_grad)


def test_a_run_on_the_cpu_refuses_cuda_graphs_before_it_starts(tmp_path, rosinality_ckpt, tiny_clip_spec):
    from tests.conftest import refused
    from tests.test_trainer import fresh_trainer

    with refused("^--compile cudagraphs: CUDA graphs need a CUDA device, this run is on cpu; use --compile"):
        fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, compile="cudagraphs")
    assert not (tmp_path / "r").exists()
