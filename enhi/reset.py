"""Where the old language went: put back the starting weights of one part of a fine-tuned model at a time.

A part whose reset brings English back holds part of what was lost; if the new language goes with it, that part is
also where the new language was learned (bench/bench_reset.py). The new tokens' rows keep their fine-tuned values
in every reset: without them nothing of the new language could remain to be measured.
"""

from __future__ import annotations

import torch

from enhi.rows import new_token_rows

PARTS = {"encoder": "encoder.", "prediction network": "decoder.", "joint": "joint.", "CTC head": "ctc_decoder."}


def start_model(pretrained_nemo: str, tokenizer_dir: str):
    """The model fine-tuning started from: the pretrained model with the enlarged vocabulary, every old row carried
    across (the transplant). Its new rows are whatever the transplant gives; `reset_part` never uses them."""
    from enhi.training import load_nemo_file
    from enhi.transplant import change_vocabulary

    model = load_nemo_file(pretrained_nemo)
    change_vocabulary(model, tokenizer_dir, transplant=True, new_rows="mean")
    return model


def weights_copy(model) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict (what `reset_part` puts back)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def start_state(pretrained_nemo: str, tokenizer_dir: str) -> dict[str, torch.Tensor]:
    """`start_model`'s weights, copied."""
    return weights_copy(start_model(pretrained_nemo, tokenizer_dir))


def reset_part(model, start: dict[str, torch.Tensor], prefix: str) -> int:
    """Copy `start` into every parameter and buffer of `model` under `prefix` (e.g. "encoder."), the new tokens'
    rows excepted; returns how many tensors were reset."""
    keep = {id(p): r for p, r in new_token_rows(model)}
    n = 0
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not name.startswith(prefix) or name not in start:  # non-persistent buffers (e.g. positional tables)
                continue
            value = start[name].to(t.device, t.dtype).clone()
            rows = keep.get(id(t))
            if rows is not None:
                value[rows] = t[rows]
            t.copy_(value)
            n += 1
    return n
