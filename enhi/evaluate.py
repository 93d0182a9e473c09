"""Transcribe, score and compute losses of a hybrid TDT-CTC model on in-memory audio or manifests.

Scoring normalizes reference and hypothesis the same way, per script: Unicode NFC, punctuation removed
(Devanagari danda included), whitespace folded, and lower-casing only for scripts that have case (Latin);
Devanagari has no case and is never lower-cased.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch

from enhi.manifest import ManifestEntry, load_audio

_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFC, no punctuation (keeps apostrophes inside words and Devanagari combining marks), case-folded Latin."""
    text = unicodedata.normalize("NFC", text)
    # \w excludes Devanagari vowel signs and virama (category Mc/Mn): keep every mark, drop only punctuation.
    text = "".join(c if (unicodedata.category(c)[0] == "M" or not _PUNCT.match(c)) else " " for c in text)
    text = " ".join(w.strip("'") for w in text.split())
    return " ".join(text.split()).lower()  # str.lower leaves Devanagari untouched


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences (words or characters)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (errors / reference length) after `normalize_text`; CER ignores spaces."""
    we = wn = ce = cn = 0
    for r, h in zip(refs, hyps, strict=True):
        r, h = normalize_text(r), normalize_text(h)
        we += edit_distance(r.split(), h.split())
        wn += len(r.split())
        ce += edit_distance(r.replace(" ", ""), h.replace(" ", ""))
        cn += len(r.replace(" ", ""))
    return {"wer": we / max(wn, 1), "cer": ce / max(cn, 1)}


def audio_batch(audios: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(a) for a in audios], dtype=torch.long)
    sig = torch.zeros(len(audios), int(lens.max()), dtype=torch.float32)
    for i, a in enumerate(audios):
        sig[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return sig.to(device), lens.to(device)


def _texts(hyps) -> list[str]:
    if isinstance(hyps, tuple):  # some NeMo versions return (best, all)
        hyps = hyps[0]
    return [h.text if hasattr(h, "text") else str(h) for h in hyps]


@torch.no_grad()
def transcribe_audio(
    model, audios: Sequence[np.ndarray], batch_size: int = 8, decoder: str = "tdt", progress: str | None = None
) -> list[str]:
    """Greedy transcripts of 16 kHz float arrays with the TDT (`decoder="tdt"`) or the CTC head; with `progress`
    (a label), a progress bar over batches when there are more than a few."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    starts = range(0, len(audios), batch_size)
    try:
        for i in tqdm(starts, desc=progress, unit="batch", disable=progress is None or len(starts) <= 4):
            sig, lens = audio_batch(audios[i : i + batch_size], device)
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
    model, entries: Sequence[ManifestEntry], batch_size: int = 8, decoder: str = "tdt", progress: str | None = None
) -> list[str]:
    """Transcribe manifest entries, shortest first (less padding), returned in manifest order."""
    order = sorted(range(len(entries)), key=lambda i: entries[i].duration)
    audio = [load_audio(entries[i].audio_filepath) for i in order]
    texts = transcribe_audio(model, audio, batch_size, decoder, progress)
    result = [""] * len(entries)
    for i, t in zip(order, texts, strict=True):
        result[i] = t
    return result


def score_predictions(predictions: Sequence[dict]) -> dict:
    """WER and CER of the TDT (`pred_text`) and CTC (`pred_text_ctc`) transcripts against `text`."""
    refs = [p["text"] for p in predictions]
    r_tdt = error_rates(refs, [p["pred_text"] for p in predictions])
    r_ctc = error_rates(refs, [p["pred_text_ctc"] for p in predictions])
    return {
        "wer": r_tdt["wer"],
        "cer": r_tdt["cer"],
        "ctc_wer": r_ctc["wer"],
        "ctc_cer": r_ctc["cer"],
        "n": len(predictions),
        "predictions": list(predictions),
    }


def evaluate_sets(model, sets: dict[str, Sequence[ManifestEntry]], batch_size: int = 8) -> dict[str, dict]:
    """Per named set: WER and CER of the TDT and CTC heads, plus the predictions."""
    results = {}
    for name, entries in sets.items():
        tdt = transcribe_entries(model, entries, batch_size, "tdt")
        ctc = transcribe_entries(model, entries, batch_size, "ctc")
        results[name] = score_predictions(
            [
                {"audio_filepath": e.audio_filepath, "text": e.text, "pred_text": p, "pred_text_ctc": c}
                for e, p, c in zip(entries, tdt, ctc, strict=True)
            ]
        )
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
