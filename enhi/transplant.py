"""Enlarge a Parakeet hybrid TDT-CTC model's vocabulary and carry every pretrained English weight across.

Layouts, all read from the loaded model rather than assumed:
- decoder embedding: rows `0..V-1` are tokens, row `V` is blank (it doubles as padding, `blank_as_pad`);
- joint output: `V` token logits, then blank at `V`, then one logit per TDT duration;
- CTC head (1x1 conv): `V` token logits, then the CTC blank at `V`.
where `V` is the tokenizer's size. After `change_vocabulary` `V` becomes `V_new >= V_old`; old token rows keep
their ids (the merged tokenizer guarantees the first `V_old` pieces are the old ones) and blank and duration
rows move to their new positions.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import open_dict

from enhi.decoding import decoder_cuda_graphs, set_decoder_cuda_graphs
from enhi.errors import UserError

# How much probability mass the new tokens may take from the old ones at step 0 (an upper bound; see
# `mass_offsets`). The loss moves by about this much per emission step: 2e-4 keeps English loss within 1e-3 of
# the original.
NEW_TOKEN_MASS_BOUND = 2e-4


@dataclass(frozen=True)
class VocabLayout:
    """Sizes and special indices of a hybrid TDT-CTC model, read off the model itself."""

    vocab_size: int  # tokenizer pieces
    num_durations: int  # TDT duration outputs at the end of the joint (0 for plain RNN-T)

    @property
    def blank(self) -> int:
        return self.vocab_size

    @classmethod
    def of(cls, model) -> VocabLayout:
        v = model.tokenizer.vocab_size
        extra = model.joint.num_extra_outputs
        # Cross-check the three heads against the tokenizer so a half-changed model is caught here.
        checks = {
            "decoder embedding": (model.decoder.prediction["embed"].num_embeddings, v + 1),
            "joint output": (model.joint.joint_net[-1].out_features, v + 1 + extra),
        }
        if hasattr(model, "ctc_decoder"):
            checks["CTC head"] = (model.ctc_decoder.decoder_layers[-1].out_channels, v + 1)
        for name, (got, want) in checks.items():
            if got != want:
                raise RuntimeError(f"{name} has {got} rows, expected {want} for a {v}-piece tokenizer")
        return cls(vocab_size=v, num_durations=extra)


def tokenizer_pieces(model) -> list[str]:
    """The model's tokenizer pieces in id order."""
    tok = model.tokenizer
    return [tok.ids_to_tokens([i])[0] for i in range(tok.vocab_size)]


def check_prefix(old_pieces: list[str], new_pieces: list[str], tokenizer_dir: str) -> None:
    """Refuse a tokenizer whose first pieces are not exactly the model's own, in order."""
    n = len(old_pieces)
    if len(new_pieces) < n or new_pieces[:n] != old_pieces:
        first_bad = next(
            (i for i, (a, b) in enumerate(zip(old_pieces, new_pieces, strict=False)) if a != b), min(n, len(new_pieces))
        )
        raise UserError(
            f"{tokenizer_dir}: its first {n} pieces are not the model's tokenizer pieces (first difference at id "
            f"{first_bad}); build it with merge_token.py --base <this model> so English ids keep their meaning"
        )


def _rows(module_param: torch.Tensor, old: torch.Tensor, new_index: list[int], old_index: list[int]) -> None:
    module_param.data[new_index] = old.data[old_index].to(module_param.dtype)


def mass_offsets(sources: list[list[int]], n_old: int, mass_bound: float) -> torch.Tensor:
    """Per new row, how far below its sources' mean logit it starts: log(n_new / mass_bound) - log(|S_i|).

    Why this bounds the step-0 change for any input: a new row that is the mean of the old rows S_i (all
    n_old label rows when S_i is empty) has logit mean_{S_i}(z) - delta_i, and by Jensen
    logsumexp_{S_i}(z) >= log|S_i| + mean_{S_i}(z), so its probability relative to the old tokens' total is at
    most exp(-log(n_new / mass_bound)) = mass_bound / n_new; all new rows together take at most `mass_bound`.
    Greedy outputs cannot change (a new logit is below the max old logit) and the loss moves by ~mass_bound.
    The mean over every old row (the fallback) gets the smallest offset; a row borrowed from one piece the
    largest (log(n_old) nats more), since that piece's logit may be the maximum.
    """
    n_new = len(sources)
    sizes = torch.tensor([len(s) or n_old for s in sources], dtype=torch.float64)
    return (math.log(n_new / mass_bound) - torch.log(sizes)).float()


@torch.no_grad()
def _init_new_output_rows(
    weight: torch.Tensor,
    bias: torch.Tensor,
    old_label_rows: list[int],
    new_rows: list[int],
    sources: list[list[int]],
    mass_bound: float,
) -> None:
    """New token rows = mean of their source rows (`sources[i]`, or every old label row when empty, tokens and
    blank), bias lowered by `mass_offsets`. Starting from old rows (not zeros) keeps new logits near the old
    ones' scale and, for borrowed rows, pointed at the sounds they stand for, so they learn fast."""
    if not new_rows:
        return
    offsets = mass_offsets(sources, len(old_label_rows), mass_bound).to(bias.device)
    for i, (row, src) in enumerate(zip(new_rows, sources, strict=True)):
        src = src or old_label_rows
        weight[row] = weight[src].mean(dim=0)
        bias[row] = bias[src].mean() - offsets[i].to(bias.dtype)


@torch.no_grad()
def _init_new_embedding_rows(
    embed: torch.Tensor, old_rows: list[int], new_rows: list[int], sources: list[list[int]], seed: int = 0
) -> None:
    """New decoder-input rows at the scale of the trained ones, rather than NeMo's unit-variance init, so the
    prediction network sees familiar magnitudes after a new token: the mean of the source rows plus a little
    noise (ties broken), or, for a row without sources, the mean of all old rows plus noise of half their
    spread. Only reached after a new token is emitted, so step-0 English transcripts do not depend on it."""
    if not new_rows:
        return
    old = embed[old_rows].float()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(new_rows), embed.shape[1], generator=g).to(embed.device)
    for i, (row, src) in enumerate(zip(new_rows, sources, strict=True)):
        centre, scale = (embed[src].float().mean(0), 0.1) if src else (old.mean(0), 0.5)
        embed[row] = (centre + scale * old.std(0) * noise[i]).to(embed.dtype)


def rebuild_transducer_loss(model) -> None:
    """Build the transducer loss exactly as the model's config defines it (NeMo's `change_vocabulary` builds a
    plain RNN-T loss and silently drops TDT durations, sigma, omega and the configured reduction)."""
    from nemo.collections.asr.losses.rnnt import RNNTLoss

    loss_name, loss_kwargs = model.extract_rnnt_loss_cfg(model.cfg.get("loss", None))
    num_classes = model.joint.num_classes_with_blank - 1
    if loss_name == "tdt":
        num_classes -= model.joint.num_extra_outputs
    model.loss = RNNTLoss(
        num_classes=num_classes,
        loss_name=loss_name,
        loss_kwargs=loss_kwargs,
        reduction=model.cfg.get("rnnt_reduction", "mean_batch"),
    )
    install_cpu_tdt_loss(model)
    if model.joint.fuse_loss_wer:
        model.joint.set_loss(model.loss)
        model.joint.set_wer(model.wer)


class DeviceDispatchTDTLoss(torch.nn.Module):
    """NeMo's numba TDT loss on CUDA, the project's pure-PyTorch one (same semantics) on CPU."""

    def __init__(self, cuda_loss: torch.nn.Module, cpu_loss: torch.nn.Module):
        super().__init__()
        self.cuda_loss = cuda_loss
        self.cpu_loss = cpu_loss

    # RNNTLoss toggles `reduction` on its inner loss around each call; mirror it onto both.
    @property
    def reduction(self):
        return self.cuda_loss.reduction

    @reduction.setter
    def reduction(self, value) -> None:
        self.cuda_loss.reduction = value
        self.cpu_loss.reduction = value

    def forward(self, acts, labels, act_lens, label_lens):
        loss = self.cuda_loss if acts.is_cuda else self.cpu_loss
        return loss(acts=acts, labels=labels, act_lens=act_lens, label_lens=label_lens)


def install_cpu_tdt_loss(model) -> None:
    """Give a TDT model a CPU path for its loss (NeMo's TDT loss runs only on CUDA). No-op for other losses."""
    from enhi.tdt_loss import TDTLossTorch

    inner = model.loss._loss
    if isinstance(inner, DeviceDispatchTDTLoss) or type(inner).__name__ != "TDTLossNumba":
        return
    _, kw = model.extract_rnnt_loss_cfg(model.cfg.get("loss", None))
    cpu = TDTLossTorch(
        blank=inner.blank,
        durations=list(kw.get("durations", [])),
        reduction=inner.reduction,
        sigma=float(kw.get("sigma", 0.0)),
        omega=float(kw.get("omega", 0.0)),
        fastemit_lambda=float(kw.get("fastemit_lambda", 0.0)),
        clamp=float(kw.get("clamp", -1.0)),
    )
    model.loss._loss = DeviceDispatchTDTLoss(inner, cpu)
    if model.joint.fuse_loss_wer:
        model.joint.set_loss(model.loss)


@contextlib.contextmanager
def tdt_omega_off(model) -> Iterator[None]:
    """Within the block the model's TDT loss always takes its TDT branch: NeMo's loss otherwise switches the
    whole call to plain RNN-T with probability omega, drawn from the global `random`, so a measurement (the
    Fisher) would depend on whatever drew from that generator before it. No-op for other losses."""
    inner = getattr(getattr(model, "loss", None), "_loss", None)
    losses = [inner.cuda_loss, inner.cpu_loss] if isinstance(inner, DeviceDispatchTDTLoss) else [inner]
    losses = [m for m in losses if hasattr(m, "omega")]
    saved = [m.omega for m in losses]
    for m in losses:
        m.omega = 0.0
    try:
        yield
    finally:
        for m, w in zip(losses, saved, strict=True):
            m.omega = w


def change_vocabulary(
    model,
    tokenizer_dir: str,
    transplant: bool = True,
    new_rows: str = "mean",
    mass_bound: float = NEW_TOKEN_MASS_BOUND,
) -> dict:
    """Switch `model` to the tokenizer in `tokenizer_dir` and, if `transplant`, carry the old rows across.

    New token rows start from the mean of every old label row (`new_rows="mean"`) or, with
    `new_rows="romanized"`, from the rows of the old pieces that spell their romanization (`enhi.new_rows`;
    pieces without one fall back to the mean). Either way they hold at most `mass_bound` of the probability
    at step 0. Returns a summary (old/new sizes, rows copied, rows borrowed). Without `transplant` this is
    NeMo's plain `change_vocabulary` (fresh output layers) with the loss rebuilt as configured.
    """
    if new_rows not in ("mean", "romanized"):
        raise UserError(f"new_rows={new_rows!r}: expected 'mean' or 'romanized'")
    old = VocabLayout.of(model)
    old_pieces = tokenizer_pieces(model)
    saved = {
        "embed": copy.deepcopy(model.decoder.prediction["embed"].weight.detach()),
        "joint_w": copy.deepcopy(model.joint.joint_net[-1].weight.detach()),
        "joint_b": copy.deepcopy(model.joint.joint_net[-1].bias.detach()),
        "pred_net": copy.deepcopy(model.decoder.prediction["dec_rnn"].state_dict()),
        "joint_enc": copy.deepcopy(model.joint.enc.state_dict()),
        "joint_pred": copy.deepcopy(model.joint.pred.state_dict()),
    }
    has_ctc = hasattr(model, "ctc_decoder")
    if has_ctc:
        saved["ctc_w"] = copy.deepcopy(model.ctc_decoder.decoder_layers[-1].weight.detach())
        saved["ctc_b"] = copy.deepcopy(model.ctc_decoder.decoder_layers[-1].bias.detach())

    if transplant:
        # Check before touching the model, so a refused tokenizer leaves it as it was.
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=f"{tokenizer_dir}/tokenizer.model")
        merged_pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        check_prefix(old_pieces, merged_pieces, tokenizer_dir)
        added = merged_pieces[old.vocab_size :]
        if new_rows == "romanized":
            from enhi.new_rows import borrowed_rows

            # The merged tokenizer spells Latin text exactly as the model's own (merge_token checks it).
            sources = borrowed_rows(added, f"{tokenizer_dir}/tokenizer.model", old.vocab_size)
        else:
            sources = [[] for _ in added]

    device = next(model.parameters()).device
    graphs = decoder_cuda_graphs(model)  # NeMo rebuilds the decoding from the config: a forced mode would be lost
    model.change_vocabulary(new_tokenizer_dir=str(tokenizer_dir), new_tokenizer_type="bpe")
    # NeMo builds the new decoder, joint and CTC head on the CPU, whatever device the model is on: put them back
    # beside the encoder (a model on a GPU was left split across devices, and the transplant failed there).
    model.to(device)
    # NeMo's change_vocabulary keeps the old spec but rebuilds the loss as plain RNN-T: undo that.
    rebuild_transducer_loss(model)
    set_decoder_cuda_graphs(model, graphs)  # the decoding afresh, over the final layers, in the mode it had
    new = VocabLayout.of(model)
    summary = {"old_vocab_size": old.vocab_size, "new_vocab_size": new.vocab_size, "transplant": transplant}
    if not transplant:
        return summary
    if new.num_durations != old.num_durations:
        raise RuntimeError("change_vocabulary changed the number of TDT durations")

    tokens = list(range(old.vocab_size))
    new_tokens = list(range(old.vocab_size, new.vocab_size))
    durations_old = [old.blank + 1 + d for d in range(old.num_durations)]
    durations_new = [new.blank + 1 + d for d in range(new.num_durations)]
    with torch.no_grad():
        embed = model.decoder.prediction["embed"].weight
        _rows(embed, saved["embed"].to(device), tokens + [new.blank], tokens + [old.blank])
        _init_new_embedding_rows(embed, tokens, new_tokens, sources)
        model.decoder.prediction["dec_rnn"].load_state_dict(saved["pred_net"])
        model.joint.enc.load_state_dict(saved["joint_enc"])
        model.joint.pred.load_state_dict(saved["joint_pred"])

        lin = model.joint.joint_net[-1]
        src = tokens + [old.blank] + durations_old
        dst = tokens + [new.blank] + durations_new
        _rows(lin.weight, saved["joint_w"].to(device), dst, src)
        _rows(lin.bias, saved["joint_b"].to(device), dst, src)
        _init_new_output_rows(lin.weight, lin.bias, tokens + [new.blank], new_tokens, sources, mass_bound)

        if has_ctc:
            conv = model.ctc_decoder.decoder_layers[-1]
            _rows(conv.weight, saved["ctc_w"].to(device), tokens + [new.blank], tokens + [old.blank])
            _rows(conv.bias, saved["ctc_b"].to(device), tokens + [new.blank], tokens + [old.blank])
            _init_new_output_rows(conv.weight, conv.bias, tokens + [new.blank], new_tokens, sources, mass_bound)

    summary["rows_copied"] = {
        "decoder_embedding": len(tokens) + 1,
        "joint_output": len(dst),
        "ctc_output": len(tokens) + 1 if has_ctc else 0,
    }
    summary["new_rows"] = new_rows
    summary["rows_borrowed"] = sum(bool(s) for s in sources)
    with open_dict(model.cfg):
        model.cfg.vocab_transplant = {"old_vocab_size": old.vocab_size, "new_vocab_size": new.vocab_size}
    return summary
