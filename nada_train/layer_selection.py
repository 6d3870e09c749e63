"""Which layers of G_train learn: fixed sets, or StyleGAN-NADA's adaptive selection of W+ codes.

The mapping network and the ToRGB layers stay frozen unless asked (the reference's default).
Adaptive selection maps each W+ code to exactly the layers that code modulates
(StyleGenerator.layers_of_code), fixing the reference's table in which index 1 picked to_rgb1 and
no other ToRGB could ever be chosen.
"""

from __future__ import annotations

import torch

from nada_train.generator.network import StyleGenerator

MANUAL_SETS = ("all", "texture", "shape")
LAYER_CHOICES = ("auto",) + MANUAL_SETS


def manual_layers(generator: StyleGenerator, name: str) -> list[str]:
    """Module names of a fixed set (all, texture, shape), as the generator's architecture defines it."""
    if name not in MANUAL_SETS:
        raise ValueError(f"unknown layer set {name!r}; choose from {', '.join(LAYER_CHOICES)}")
    return generator.layer_set(name)


def default_auto_k(n_latent: int) -> int:
    """The reference notebook's "improve shape" preset: int(2 * n_latent / 3)."""
    return max(1, int(2 * n_latent / 3))


def set_trainable(generator: StyleGenerator, module_names: list[str]) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the named modules. Returns the trainable parameters."""
    generator.requires_grad_(False)
    modules = dict(generator.named_modules())
    params = []
    for name in module_names:
        if name not in modules:
            raise KeyError(f"generator has no module {name!r}")
        for p in modules[name].parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def codes_with_layers(generator: StyleGenerator, include_torgb: bool = False) -> list[int]:
    """The W+ codes that drive at least one layer that can learn: the last code drives only the last
    ToRGB, so without --train-torgb choosing it would train nothing."""
    return [c for c in range(generator.n_latent) if generator.layers_of_code(c, include_torgb)]


def select_codes(
    g_train: StyleGenerator,
    w: torch.Tensor,
    global_loss_fn,
    k: int,
    iters: int,
    lr: float = 0.01,
    candidates: list[int] | None = None,
    synthesis=None,
) -> list[int]:
    """Optimise W+ copies of `w` for `iters` SGD steps on the global CLIP loss through G_train and
    return the k codes among `candidates` (default: all) that moved most (mean |change|), most-moved
    first. `synthesis`: G_train's synthesis as the trainer calls it (compiled or not); default the plain one."""
    synthesis = synthesis or g_train.synthesis
    ws_start = g_train.broadcast(w.detach()).clone()
    ws = ws_start.clone().requires_grad_(True)
    opt = torch.optim.SGD([ws], lr=lr)
    was = [p.requires_grad for p in g_train.parameters()]
    g_train.requires_grad_(False)  # only the codes move here
    try:
        for _ in range(iters):
            loss = global_loss_fn(synthesis(ws))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, r in zip(g_train.parameters(), was):
            p.requires_grad_(r)
    change = (ws.detach() - ws_start).abs().mean(dim=(0, 2))  # [n_latent]
    candidates = list(range(g_train.n_latent)) if candidates is None else candidates
    k = max(1, min(k, len(candidates)))
    top = torch.topk(change[candidates], k).indices.tolist()
    return [candidates[i] for i in top]


def layers_for_codes(generator: StyleGenerator, codes: list[int], include_torgb: bool = False) -> list[str]:
    names: list[str] = []
    for c in codes:
        for n in generator.layers_of_code(c, include_torgb):
            if n not in names:
                names.append(n)
    return names
