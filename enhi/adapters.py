"""Regularised adapters against forgetting: NVIDIA's "damage control" for transducers (arXiv 2210.03255).

With `model.adaptation.adapter_dim > 0` every pretrained weight is held as it was and the new language is learned
by small residual adapters (NeMo's `LinearAdapter`: norm, down-projection to `adapter_dim`, swish, up-projection
that starts at zero) in each encoder layer, after the prediction network and in the joint, plus the new tokens'
own rows. The adapters start as the identity, so step 0 is the pretrained model; NeMo's residual strategy adds
`adapter_l2` x the squared change each adapter makes to its input to the loss (the paper's regularisation: an
adapter that changes little changes English little).

- `add_adapters`: the encoder, prediction network and joint become NeMo's adapter-capable classes (the same
  modules; NeMo registers `ConformerEncoderAdapter`, `RNNTDecoderAdapter`, `RNNTJointAdapter` for them, and the
  model's config names them, so stock NeMo's `restore_from` rebuilds the adapters from a saved .nemo), then one
  adapter per module, enabled. `bind_l2` works around NeMo 3.0 never adding the adapters' L2 term.
- `HoldPretrained`: a Lightning callback. Pretrained tensors outside the output layers get no gradient; in the
  output layers (decoder embedding, joint and CTC outputs), which hold the new rows too, each optimizer step's
  change to the old rows is undone after the step (exact with any optimizer, weight decay included). BatchNorm
  statistics of the pretrained encoder stay as pretrained (those modules run in eval mode).
With the pretrained weights held, the optimizer's encoder and heads groups hold only adapters and new rows: the
adapter arm sets `encoder_lr_scale` and `heads_lr_scale` to 1 (bench/bench_adaptation.py).
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf, open_dict

from enhi.errors import UserError
from enhi.rows import EditStepOnRows

MODULES = ("encoder", "decoder", "joint")  # where adapters go (NeMo's attribute names)
NAME = "enhi"  # adapter names: "<module>:enhi_<module>" (NeMo wants them unique across the model)


def _dims(model) -> dict[str, int]:
    c = model.cfg
    return {"encoder": int(c.encoder.d_model), "decoder": int(c.decoder.prednet.pred_hidden),
            "joint": int(c.joint.jointnet.joint_hidden)}


def has_adapters(model) -> bool:
    return any(f"{NAME}_{m}" in (model.cfg.get("adapters") or {}) for m in MODULES)


def add_adapters(model, dim: int, l2: float = 0.0, dropout: float = 0.0) -> None:
    """Give `model` one enabled adapter of bottleneck `dim` in each of `MODULES` (see the module doc). A model
    that already carries them (a .nemo saved by the recipe) is left as it is."""
    from nemo.collections.common.parts.adapter_modules import LinearAdapterConfig
    from nemo.core.classes.mixins import adapter_mixins
    from nemo.core.classes.mixins.adapter_mixin_strategies import ResidualAddAdapterStrategyConfig

    if has_adapters(model):
        return
    for name in MODULES:
        module = getattr(model, name)
        if isinstance(module, adapter_mixins.AdapterModuleMixin):
            continue
        meta = adapter_mixins.get_registered_adapter(type(module))
        if meta is None:
            raise UserError(f"adapter_dim: NeMo has no adapter-capable version of the {name} "
                            f"({type(module).__name__}); set model.adaptation.adapter_dim=0")
        # The adapter class adds methods only (its adapter state is created by add_adapter), so the module keeps
        # its weights; the config names the class so that a restored .nemo is built with it.
        module.__class__ = meta.adapter_class
        with open_dict(model.cfg):
            model.cfg[name]._target_ = meta.adapter_class_path
    for name, d in _dims(model).items():
        strategy = ResidualAddAdapterStrategyConfig(stochastic_depth=0.0, l2_lambda=float(l2))
        cfg = LinearAdapterConfig(in_features=d, dim=int(dim), dropout=float(dropout), adapter_strategy=strategy)
        model.add_adapter(f"{name}:{NAME}_{name}", OmegaConf.structured(cfg))
    model.set_enabled_adapters(enabled=True)


def bind_l2(model) -> None:
    """Make NeMo add the adapters' L2 term to the training loss. NeMo 3.0's residual strategy switches the
    loss registry on for the model id it finds on itself, but only modules get the model's id (strategies are
    not modules), so the term is registered and never added (and the registry is never emptied). Giving each
    strategy the model's id fixes both."""
    for name, m in model.named_modules():
        strategy = getattr(m, "adapter_strategy", None)
        if name.rsplit(".", 2)[-2:-1] == ["adapter_layer"] and strategy is not None:
            strategy.model_guid = model.model_guid


def adapter_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if ".adapter_layer." in n]


class HoldPretrained(EditStepOnRows):
    """Hold every pretrained weight of an adapter run (see the module doc)."""

    def __init__(self, model, new_rows: list[tuple[torch.nn.Parameter, slice]]):
        adapters = {id(p) for _, p in adapter_parameters(model)}
        if not adapters:
            raise ValueError("HoldPretrained needs a model with adapters (enhi.adapters.add_adapters)")
        shared = {id(p) for p, _ in new_rows}
        # Old rows of the tensors that also hold new rows: the English tokens before the new rows, and the blank
        # and TDT durations after them.
        super().__init__([(p, rows) for p, r in new_rows for rows in (slice(0, r.start), slice(r.stop, None))])
        for p in model.parameters():
            if id(p) not in adapters and id(p) not in shared:
                p.requires_grad_(False)
        self.bn = [m for n, m in model.named_modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and ".adapter_layer." not in n]

    def edit(self, now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        return before

    def on_train_start(self, trainer, pl_module) -> None:
        bind_l2(pl_module)  # the adapters of this fit, whether just added or rebuilt by a restore

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for m in self.bn:
            m.eval()
