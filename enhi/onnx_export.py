"""A hybrid TDT-CTC `.nemo` as ONNX files that onnx-asr runs (ONNX Runtime, CPU or GPU, no PyTorch or NeMo).

`export_for_onnx_asr(model, out)` writes, into a new folder:

* `encoder-model.onnx`, `decoder_joint-model.onnx`: NeMo's own export (`model.export`) of the encoder and of
  the prediction network + joint, the transducer (TDT) head, which is what the model transcribes with;
* `vocab.txt`: one `piece id` a line for every token, then `<blk> V` (NeMo's blank follows the tokens), the
  layout onnx-asr's `nemo-conformer-tdt` reads;
* `config.json`: onnx-asr's model type and the features, subsampling and symbols-per-frame the model uses;
* with `int8=True`, `encoder-model.int8.onnx` and `decoder_joint-model.int8.onnx` beside them: ONNX Runtime's
  dynamic quantization (int8 weights, activations quantized per call), read by onnx-asr's `quantization="int8"`.

What onnx-asr computes itself must match the model, so it is checked first and a mismatch is one line naming
the setting: its feature extractor is NeMo's default (16 kHz, 25 ms Hann window, 10 ms hop, 512-point FFT,
per-feature normalisation, 80 or 128 mel bins), and it reads a TDT duration as an index into
`[0, 1, 2, ...]`. A BiRWKV7 encoder is refused: its recurrence runs a loop over time that NeMo's export does
not trace into a graph of any length.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from enhi.atomic import atomic_dir
from enhi.errors import UserError

ONNX_ASR_TYPE = "nemo-conformer-tdt"
ENCODER, DECODER_JOINT = "encoder-model.onnx", "decoder_joint-model.onnx"
INT8_SUFFIX = ".int8.onnx"
# onnx-asr's NeMo feature extractor, as the model config spells each setting (a setting the config leaves out
# takes NeMo's default, which is this value).
ONNX_ASR_FEATURES = {"sample_rate": 16000, "window_size": 0.025, "window_stride": 0.01, "n_fft": 512,
                     "window": "hann", "normalize": "per_feature", "log": True}
ONNX_ASR_MEL_BINS = (80, 128)


def tdt_durations(model: Any) -> list[int]:
    """The TDT durations of a transducer model (empty for a plain RNN-T)."""
    return list(model.cfg.get("model_defaults", {}).get("tdt_durations") or [])


def check_exportable(model: Any, source: str) -> None:
    """One-line errors, naming `source`, for a model onnx-asr would run differently from NeMo."""
    from birwkv7.convert import is_birwkv7

    if is_birwkv7(model):
        raise UserError(f"{source}: a BiRWKV7 encoder cannot be exported to ONNX (its time loop does not trace into "
                        "a graph of any length); transcribe it with NeMo (eval_nemo.py, transcribe_long.py)")
    durations = tdt_durations(model)
    if not hasattr(model, "joint") or not durations:
        raise UserError(f"{source}: not a TDT transducer model; export_onnx.py writes onnx-asr's {ONNX_ASR_TYPE} layout")
    if durations != list(range(len(durations))):
        raise UserError(f"{source}: TDT durations {durations} are not 0, 1, 2, ...; onnx-asr reads a duration as its "
                        "index, so it would decode this model wrongly")
    pre = model.cfg.preprocessor
    for key, want in ONNX_ASR_FEATURES.items():
        have = pre.get(key, want)
        if have != want:
            raise UserError(f"{source}: preprocessor.{key}={have}, but onnx-asr computes features with {key}={want}")
    if pre.get("features") not in ONNX_ASR_MEL_BINS:
        raise UserError(f"{source}: preprocessor.features={pre.get('features')}; onnx-asr has {ONNX_ASR_MEL_BINS} mel bins")


def vocab_lines(model: Any) -> list[str]:
    """onnx-asr's vocab.txt: `piece id` for every token id, then the blank as `<blk> V`."""
    sp = model.tokenizer.tokenizer  # the SentencePiece processor
    n = model.tokenizer.vocab_size
    if model.joint.num_classes_with_blank - 1 - model.joint.num_extra_outputs != n:
        raise UserError(f"the tokenizer has {n} pieces but the joint does not have {n} token rows; was the vocabulary "
                        "changed without change_vocabulary?")
    return [f"{sp.id_to_piece(i)} {i}" for i in range(n)] + [f"<blk> {n}"]


def onnx_asr_config(model: Any) -> dict[str, Any]:
    return {
        "model_type": ONNX_ASR_TYPE,
        "features_size": int(model.cfg.preprocessor.features),
        "subsampling_factor": int(model.cfg.encoder.subsampling_factor),
        "max_tokens_per_step": int(model.cfg.decoding.get("greedy", {}).get("max_symbols") or 10),
    }


def quantize_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights for MatMul/Gemm (the bulk of the parameters)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise UserError("--int8 needs onnxruntime: uv sync --group deploy (or pip install onnxruntime)") from None
    # Convolutions stay in float: ONNX Runtime's CPU provider has no integer kernel for every conv the encoder uses.
    # It logs advice (shape pre-processing, optional) on the root logger; that goes to the library log, not the terminal.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def export_for_onnx_asr(model: Any, out: str | os.PathLike, source: str, int8: bool = False,
                        force: bool = False) -> dict[str, Any]:
    """Write the onnx-asr folder `out` (whole or not at all); returns the files and their sizes in bytes."""
    check_exportable(model, source)
    vocab = vocab_lines(model)
    if getattr(model, "cur_decoder", "rnnt") != "rnnt":
        model.change_decoding_strategy(decoder_type="rnnt", verbose=False)  # the TDT head is what is exported
    model.eval()
    with atomic_dir(out, force=force) as tmp:
        model.export(str(tmp / "model.onnx"))  # NeMo names the two parts encoder-model / decoder_joint-model
        for name in (ENCODER, DECODER_JOINT):
            if not (tmp / name).is_file():
                raise RuntimeError(f"NeMo's export did not write {name}")
            if int8:
                quantize_int8(tmp / name, tmp / name.replace(".onnx", INT8_SUFFIX))
        (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(onnx_asr_config(model), indent=1) + "\n", encoding="utf-8")
    return {p.name: p.stat().st_size for p in sorted(Path(out).iterdir())}


def load_onnx_asr(folder: str | os.PathLike, int8: bool = False) -> Any:
    """onnx-asr's recognizer for an exported folder (CPU)."""
    import onnx_asr

    return onnx_asr.load_model(ONNX_ASR_TYPE, str(folder), quantization="int8" if int8 else None,
                               providers=["CPUExecutionProvider"])


def onnx_asr_command(folder: str | os.PathLike, int8: bool = False) -> str:
    """The one-line onnx-asr command that transcribes WAV files with an exported folder."""
    q = " -q int8" if int8 else ""
    return f"uv run onnx-asr {ONNX_ASR_TYPE} clip.wav -p {folder}{q}"
