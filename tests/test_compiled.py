"""--compile: the training step through torch.compile.

The tests compile with the "aot_eager" backend: Dynamo's capture and AOTAutograd's forward and
backward graphs are the ones Inductor would get, but Inductor's code generation (minutes cold on two
cores) is skipped. benchmarks.training --compare runs the real Inductor path and times it.
"""

import pytest
import torch
import torch._dynamo.utils

import nada_train.compiled
from tests.conftest import refused, relative_step_difference
from tests.test_trainer import fresh_trainer


@pytest.fixture(autouse=True)
def aot_eager(monkeypatch):
    monkeypatch.setattr(nada_train.compiled, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def graphs_made() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_compiled_steps_follow_the_eager_ones_and_train_only_the_chosen_layers(
    tmp_path, rosinality_ckpt, tiny_clip_spec
):
    runs = {
        mode: fresh_trainer(
            tmp_path, rosinality_ckpt, tiny_clip_spec, mode, layers="auto", auto_layer_k=2, compile=mode
        )
        for mode in ("off", "inductor")
    }
    records = {mode: [t.step() for _ in range(4)] for mode, t in runs.items()}
    assert [r["layers"] for r in records["inductor"]] == [r["layers"] for r in records["off"]]
    assert [r["loss"] for r in records["inductor"]] == pytest.approx(
        [r["loss"] for r in records["off"]], abs=5e-3
    )
    eager, compiled = (dict(t.g_train.named_parameters()) for t in runs.values())
    base = dict(fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "base").g_train.named_parameters())
    # rounding only (see the fused test's figures)
    assert relative_step_difference(compiled, eager, base) < 2e-3
    # every synthesis layer got a gradient in the compiled backward; only the chosen ones moved
    chosen = {layer for r in records["inductor"] for layer in r["layers"]}
    moved = {n for n in compiled if not torch.equal(compiled[n], base[n])}
    assert moved and all(any(n.startswith(layer + ".") for layer in chosen) for n in moved)
    last = set(records["inductor"][-1]["layers"])
    with_grad = {n for n, p in compiled.items() if p.grad is not None}
    assert with_grad and all(any(n.startswith(layer + ".") for layer in last) for n in with_grad)


def test_one_graph_serves_every_choice_of_layers_and_every_target(tmp_path, rosinality_ckpt, tiny_clip_spec):
    """A graph is specialised on which inputs need gradients: were the unchosen layers frozen as in the
    eager path, each new choice would compile again. Targets trained together share the graphs."""
    first = fresh_trainer(
        tmp_path, rosinality_ckpt, tiny_clip_spec, "a", layers="auto", auto_layer_k=2, compile="inductor"
    )
    first.step()
    made = graphs_made()
    assert made >= 3  # selection, training and frozen synthesis at least
    choices = {tuple(first.step()["layers"]) for _ in range(5)}
    assert len(choices) >= 2, choices  # the test needs two choices to mean anything
    second = fresh_trainer(
        tmp_path,
        rosinality_ckpt,
        tiny_clip_spec,
        "b",
        layers="auto",
        auto_layer_k=2,
        compile="inductor",
        target="watercolor painting",
    )
    second.step()
    assert graphs_made() == made


def test_compile_choices_are_checked_in_one_line(tmp_path, rosinality_ckpt, tiny_clip_spec, monkeypatch):
    from tests.test_cli import parsed_options

    assert (
        parsed_options(
            monkeypatch,
            "--generator",
            str(rosinality_ckpt),
            "--target",
            "x",
            "--out",
            str(tmp_path / "cli"),
            "--compile",
            "inductor",
        ).compile
        == "inductor"
    )
    with refused("--compile fast: choose one of off, inductor, cudagraphs"):
        fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "x", compile="fast")
    with refused("--compile cudagraphs: CUDA graphs need a CUDA device, this run is on cpu"):
        fresh_trainer(tmp_path, rosinality_ckpt, tiny_clip_spec, "y", compile="cudagraphs")
