"""Transcribe, score and compute losses of a hybrid TDT-CTC model on in-memory audio or manifests.

Scores come from enhi/scoring.py: the project's scheme (what validation has always reported, against the
training-normalized reference) and the language's benchmark scheme (Vistaar for Indic languages, the Open ASR
Leaderboard's for English, against the reference as the manifest writes it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from enhi.manifest import ManifestEntry, audio_batch, load_audio  # noqa: F401 (audio_batch re-exported)
from enhi.scoring import edit_distance, error_rates, normalize_text, score, standard_scheme  # noqa: F401 (re-exported)


def _texts(hyps) -> list[str]:
    if isinstance(hyps, tuple):  # some NeMo versions return (best, all)
        hyps = hyps[0]
    return [h.text if hasattr(h, "text") else str(h) for h in hyps]


@torch.no_grad()
def transcribe_audio(
    model, audios: Sequence[np.ndarray], batch_size: int = 8, decoder: str = "tdt", progress: str | None = None,
    lang: str | Sequence[str] | None = None,
) -> list[str]:
    """Greedy transcripts of 16 kHz float arrays with the TDT (`decoder="tdt"`) or the CTC head; with `progress`
    (a label), a progress bar over batches when there are more than a few. `lang` picks a gated model's path: one
    language, one per utterance, or "auto" for its router (enhi/language_gate.py)."""
    from tqdm import tqdm

    from enhi.language_gate import AUTO, decoding_as, route

    if lang == AUTO:
        lang = route(model, audios, batch_size)

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    starts = range(0, len(audios), batch_size)
    try:
        for i in tqdm(starts, desc=progress, unit="batch", disable=progress is None or len(starts) <= 4):
            sig, lens = audio_batch(audios[i : i + batch_size], device)
            with decoding_as(model, lang if lang is None or isinstance(lang, str) else lang[i : i + batch_size]):
                enc, enc_len = model.forward(input_signal=sig, input_signal_length=lens)
                if decoder == "tdt":
                    hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len)
                elif decoder == "ctc":
                    log_probs = model.ctc_decoder(encoder_output=enc)
                    hyps = model.ctc_decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=enc_len)
                else:
                    raise ValueError(f"decoder must be 'tdt' or 'ctc', not {decoder!r}")
            out.extend(_texts(hyps))
    finally:
        model.train(was_training)
    return out


def transcribe_entries(
    model, entries: Sequence[ManifestEntry], batch_size: int = 8, decoder: str = "tdt", progress: str | None = None,
    lang: str | Sequence[str] | None = None,
) -> list[str]:
    """Transcribe manifest entries, shortest first (less padding), returned in manifest order (`lang`: as in
    `transcribe_audio`, one per entry in manifest order)."""
    order = sorted(range(len(entries)), key=lambda i: entries[i].duration)
    audio = [load_audio(entries[i].audio_filepath) for i in order]
    if lang is not None and not isinstance(lang, str):
        lang = [lang[i] for i in order]
    texts = transcribe_audio(model, audio, batch_size, decoder, progress, lang)
    result = [""] * len(entries)
    for i, t in zip(order, texts, strict=True):
        result[i] = t
    return result


def score_predictions(predictions: Sequence[dict], lang: str | None = None) -> dict:
    """WER and CER of the TDT (`pred_text`) and CTC (`pred_text_ctc`) transcripts against `text`; with `lang`,
    also the TDT transcripts' benchmark score (`std_wer`, `std_cer`, scheme `std_scheme`) against `raw_text`
    (the manifest's own reference, before training normalization) where the language has a standard scheme."""
    refs = [p["text"] for p in predictions]
    r_tdt = error_rates(refs, [p["pred_text"] for p in predictions])
    r_ctc = error_rates(refs, [p["pred_text_ctc"] for p in predictions])
    out = {
        "wer": r_tdt["wer"],
        "cer": r_tdt["cer"],
        "ctc_wer": r_ctc["wer"],
        "ctc_cer": r_ctc["cer"],
        "n": len(predictions),
        "predictions": list(predictions),
    }
    if predictions and "pred_text_auto" in predictions[0]:  # a gated model decoded without the language too (its router's paths)
        auto = error_rates(refs, [p["pred_text_auto"] for p in predictions])
        out.update(auto_wer=auto["wer"], auto_cer=auto["cer"],
                   routed=sum(p["routed"] == lang for p in predictions) / len(predictions))
    scheme = standard_scheme(lang) if lang else None
    if scheme:
        std = score([p.get("raw_text", p["text"]) for p in predictions], [p["pred_text"] for p in predictions],
                    scheme, lang)
        out.update(std_wer=std["wer"], std_cer=std["cer"], std_scheme=scheme)
    return out


def evaluate_sets(model, sets: dict[str, Sequence[ManifestEntry]], batch_size: int = 8,
                  langs: dict[str, str] | None = None) -> dict[str, dict]:
    """Per named set: WER and CER of the TDT and CTC heads, plus the predictions; a set whose language `langs`
    names is also scored by its benchmark scheme (`score_predictions`)."""
    from enhi.language_gate import is_gated, route

    results = {}
    for name, entries in sets.items():
        lang = (langs or {}).get(name) if is_gated(model) else None  # a gated model: each set on its language's path
        tdt = transcribe_entries(model, entries, batch_size, "tdt", lang=lang)
        ctc = transcribe_entries(model, entries, batch_size, "ctc", lang=lang)
        preds = [{"audio_filepath": e.audio_filepath, "text": e.text, "raw_text": e.raw_text or e.text,
                  "pred_text": p, "pred_text_ctc": c} for e, p, c in zip(entries, tdt, ctc, strict=True)]
        if lang is not None and model.cfg.language_gate.get("router") is not None:
            # And as if the language were unknown: the router's choice per utterance, and the transcripts it gives.
            routed = route(model, [load_audio(e.audio_filepath) for e in entries], batch_size)
            auto = transcribe_entries(model, entries, batch_size, "tdt", lang=routed)
            for p, a, r in zip(preds, auto, routed, strict=True):
                p.update(pred_text_auto=a, routed=r)
        results[name] = score_predictions(preds, (langs or {}).get(name))
    return results


def token_batch(model, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts as the model's padded token ids (B, U) and their lengths, on the model's device."""
    device = next(model.parameters()).device
    ids = [model.tokenizer.text_to_ids(t) for t in texts]
    tl = torch.tensor([len(x) for x in ids], dtype=torch.long, device=device)
    tr = torch.zeros(len(ids), int(tl.max()), dtype=torch.long, device=device)
    for i, x in enumerate(ids):
        tr[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return tr, tl


def hybrid_loss(model, sig: torch.Tensor, lens: torch.Tensor, tr: torch.Tensor, tl: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's training objective on one batch as tensors (gradients flow unless the caller disables them):
    transducer loss as configured (`rnnt`), CTC loss (`ctc`, when weighted) and their configured mix (`total`).
    Spec-augment and dropout apply only if the model is in training mode."""
    enc, enc_len = model.forward(input_signal=sig, input_signal_length=lens)
    dec, target_len, _ = model.decoder(targets=tr, target_length=tl)
    # The raw joint (B, T, U+1, V+1+D): the same whether or not the model fuses loss and WER.
    joint = model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2))
    rnnt = model.loss(log_probs=joint, targets=tr, input_lengths=enc_len, target_lengths=target_len)
    out = {"rnnt": rnnt, "total": rnnt}
    w = getattr(model, "ctc_loss_weight", 0)
    if w > 0:
        ctc = model.ctc_loss(log_probs=model.ctc_decoder(encoder_output=enc), targets=tr, input_lengths=enc_len,
                             target_lengths=tl)
        out.update(ctc=ctc, total=(1 - w) * rnnt + w * ctc)
    return out


def batch_losses(model, audios: Sequence[np.ndarray], texts: Sequence[str]) -> dict[str, float]:
    """`hybrid_loss` as floats, computed outside Lightning in eval mode (no dropout or spec-augment)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sig, lens = audio_batch(audios, next(model.parameters()).device)
            return {k: float(v) for k, v in hybrid_loss(model, sig, lens, *token_batch(model, texts)).items()}
    finally:
        model.train(was_training)
