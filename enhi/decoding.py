"""NeMo's greedy TDT decoder on a GPU: its CUDA-graph mode as a setting, a fresh decoding after every change of
layers, the decoding's invariants, and a workaround for NeMo 3.0.0's NVRTC log buffer.

Why: the one GPU fine-tune so far (an H200) died of "an illegal memory access" at its first transcription, inside
NeMo's greedy TDT label-looping decoder, which captures CUDA graphs by default (its full-graph mode, with
conditional nodes, whenever `cuda.bindings` imports). Until a GPU run shows a graph mode safe, the recipe decodes
without graphs (`disabled`); on a CPU the modes are the same code (NeMo's graphs run on CUDA tensors only).

The modes (`model.decoder_cuda_graphs` in the YAML, `--decoder-cuda-graphs` in the scripts):
  disabled        no CUDA graphs (`decoding.greedy.use_cuda_graph_decoder=false`, kept in the model's config, so a
                  `.nemo` written afterwards decodes without them in stock NeMo too);
  nemo            NeMo's own choice (full graph when cuda-python imports, else graphs without while loops);
  no_graphs       NeMo's stateful decoder without graphs, forced (NeMo's mode for debugging);
  no_while_loops  NeMo's PyTorch loop around partial CUDA graphs, forced (no silent fallback);
  full_graph      NeMo's full graph with conditional nodes, forced (no silent fallback).
A forced mode lives in the running process only (NeMo's `force_cuda_graphs_mode`); the `.nemo` records `nemo`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

from omegaconf import open_dict

from enhi.errors import UserError

DECODER_CUDA_GRAPHS = ("disabled", "nemo", "no_graphs", "no_while_loops", "full_graph")  # not "off": YAML reads False
DEFAULT_DECODER_CUDA_GRAPHS = "disabled"  # the only mode not yet seen to crash on a GPU (bench/gpu_check.py decides)
FORCED_MODES = ("no_graphs", "no_while_loops", "full_graph")


# ---- NeMo 3.0.0's NVRTC log buffer (NeMo issue #15790, fixed upstream by PR #16235, not in a release) ----
# `run_nvrtc` asks NVRTC to write the compile log into `b" " * size`. For an empty log `size` is 1, and CPython
# returns its one shared `b" "` object for that, so NVRTC writes a NUL into it: from then on every `b" "` in the
# process reads `b"\x00"` (the torch.load corruption of NeMo issue #15423). The workaround hands NVRTC a buffer
# of its own; it is applied only while the installed NeMo still builds the log buffer that way.

_SHARED_LOG_BUFFER = re.compile(r"""b(['"]) \1\s*\*\s*\w+""")


class _NvrtcWithPrivateLog:
    """`cuda.bindings.nvrtc` as NeMo's `cuda_python_utils` sees it, except that the compile log is written into a
    fresh buffer (the caller's is only ever a scratch space NeMo never reads)."""

    def __init__(self, nvrtc: Any) -> None:
        self._nvrtc = nvrtc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nvrtc, name)

    def nvrtcGetProgramLog(self, prog: Any, log: bytes) -> Any:  # noqa: N802 (NVRTC's name)
        # Two bytes or more: never one of CPython's shared one-byte objects.
        return self._nvrtc.nvrtcGetProgramLog(prog, bytes(len(log) + 1))


def nemo_shares_nvrtc_log_buffer() -> bool:
    """Whether the installed NeMo's `run_nvrtc` builds its log buffer by repeating a one-byte literal."""
    from nemo.core.utils import cuda_python_utils

    return bool(_SHARED_LOG_BUFFER.search(inspect.getsource(cuda_python_utils.run_nvrtc)))


def nemo_log_buffer_intact() -> bool:
    """Whether the one-byte `b" "` constant NeMo's `run_nvrtc` repeats still holds a space: NVRTC's NUL lands in it
    (and, where CPython shares the object, in every `b" "` of the process)."""
    from nemo.core.utils import cuda_python_utils

    consts = [k for k in cuda_python_utils.run_nvrtc.__code__.co_consts if isinstance(k, bytes) and len(k) == 1]
    return all(k[0] != 0 for k in consts)  # NeMo's one-byte constants are spaces; NVRTC writes a NUL


@functools.cache
def apply_nemo_workarounds() -> tuple[str, ...]:
    """Apply the workarounds the installed NeMo needs, once per process; returns the names of those applied.
    Call before the first decoding on a GPU (the scripts, `load_model` and gpu_check do)."""
    from nemo.core.utils import cuda_python_utils

    applied = []
    nvrtc = getattr(cuda_python_utils, "nvrtc", None)  # absent without cuda-python: no graphs, nothing to mend
    if nvrtc is not None and not isinstance(nvrtc, _NvrtcWithPrivateLog) and nemo_shares_nvrtc_log_buffer():
        cuda_python_utils.nvrtc = _NvrtcWithPrivateLog(nvrtc)
        applied.append("nvrtc-private-log-buffer")
    return tuple(applied)


# ---- the decoder's CUDA-graph mode ----

def check_mode(mode: str) -> str:
    if mode not in DECODER_CUDA_GRAPHS:
        raise UserError(f"decoder_cuda_graphs={mode!r}: expected one of {', '.join(DECODER_CUDA_GRAPHS)}")
    return mode


def label_looping_computer(model: Any) -> Any | None:
    """NeMo's batched greedy TDT/RNN-T computer inside `model.decoding` (None for models or strategies without)."""
    inner = getattr(getattr(model, "decoding", None), "decoding", None)
    return getattr(inner, "decoding_computer", None)


def set_decoder_cuda_graphs(model: Any, mode: str = DEFAULT_DECODER_CUDA_GRAPHS) -> None:
    """Rebuild `model.decoding` from the model's config with the CUDA-graph `mode` (see the module docstring).

    The rebuild also resets the decoding after a change of layers: NeMo's decoding object holds the decoder and
    joint it was built with and any graphs it captured, and NeMo re-initialises those only in Lightning's epoch
    hooks, comparing batch size, length and device, never the layers. The hybrid model's active head
    (`cur_decoder`) stays as it was. Models without a transducer decoding (pure CTC) are left alone."""
    check_mode(mode)
    if not hasattr(getattr(model, "decoding", None), "rnnt_decoder_predictions_tensor"):
        return
    cfg = copy.deepcopy(model.cfg.decoding)
    with open_dict(cfg):
        cfg.greedy.use_cuda_graph_decoder = mode != "disabled"
    current = getattr(model, "cur_decoder", None)
    if hasattr(model, "ctc_decoder"):
        model.change_decoding_strategy(cfg, decoder_type="rnnt", verbose=False)
        model.cur_decoder = current
    else:
        model.change_decoding_strategy(cfg, verbose=False)
    computer = label_looping_computer(model)
    if mode in FORCED_MODES and computer is not None:
        computer.force_cuda_graphs_mode(mode)


def decoder_cuda_graphs(model: Any) -> str:
    """The mode `model.decoding` runs with now (as named in DECODER_CUDA_GRAPHS)."""
    computer = label_looping_computer(model)
    if computer is None or not computer.allow_cuda_graphs:
        return "disabled"
    forced = computer.cuda_graphs_mode is not None and not computer.cuda_graphs_allow_fallback
    return str(computer.cuda_graphs_mode) if forced else "nemo"


def decoding_problems(model: Any) -> list[str]:
    """What is wrong with `model.decoding` for the model as it is now (an empty list when nothing): it must decode
    with the model's own decoder and joint, blank = the tokenizer's size, the loss's TDT durations, and hold no
    captured CUDA graph."""
    problems = []
    dec = model.decoding
    inner = dec.decoding
    blank = model.tokenizer.vocab_size
    if inner.decoder is not model.decoder or inner.joint is not model.joint:
        problems.append("the decoding holds another decoder or joint than the model's")
    if dec.blank_id != blank or inner._blank_index != blank:
        problems.append(f"decoding blank {dec.blank_id}/{inner._blank_index}, tokenizer size {blank}")
    _, loss_kwargs = model.extract_rnnt_loss_cfg(model.cfg.get("loss", None))
    want = list(loss_kwargs.get("durations", []) or [])
    have = list(getattr(dec, "durations", None) or [])
    if have != want:
        problems.append(f"decoding durations {have}, loss durations {want}")
    computer = label_looping_computer(model)
    if computer is not None:
        if computer.decoder is not model.decoder or computer.joint is not model.joint:
            problems.append("NeMo's label-looping computer holds another decoder or joint than the model's")
        if computer._blank_index != blank:
            problems.append(f"label-looping blank {computer._blank_index}, tokenizer size {blank}")
        if [int(d) for d in getattr(computer, "durations", [])] != want:
            problems.append("label-looping durations differ from the loss's")
        captured = [n for n in ("state", "full_graph", "separate_graphs") if getattr(computer, n, None) is not None]
        if captured:
            problems.append(f"CUDA-graph state already captured: {', '.join(captured)}")
    return problems
