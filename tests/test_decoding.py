"""enhi/decoding.py: the NVRTC log-buffer workaround (reproduced without a GPU), the decoder's CUDA-graph modes, and
the decoding's invariants after every change of layers the recipe makes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import MERGED_DIR, ROOT

from demo.common import DEMO_SETTINGS
from enhi import decoding

# NeMo's own run_nvrtc on a kernel that compiles with an empty log; no GPU or driver is needed up to the module
# load, which then fails. Printed last: whether the b" " constant NeMo's run_nvrtc repeats still holds a space.
NVRTC_PROBE = textwrap.dedent('''
    import sys
    sys.path.insert(0, {root!r})
    from nemo.core.utils import cuda_python_utils as c
    if {patch}:
        from enhi.decoding import apply_nemo_workarounds
        print("applied", apply_nemo_workarounds())
    try:
        c.run_nvrtc('extern "C" __global__ void k(int *x) {{ *x = 1; }}', b"k", b"k.cu")
    except Exception as e:  # no driver here: the PTX cannot be loaded
        print("after compile:", type(e).__name__)
    from enhi.decoding import nemo_log_buffer_intact
    print("space", nemo_log_buffer_intact())
''')


def _nvrtc_probe(patch: bool) -> str:
    proc = subprocess.run([sys.executable, "-c", NVRTC_PROBE.format(root=str(ROOT), patch=patch)],
                          capture_output=True, text=True, timeout=240)
    if "NVRTC" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("libnvrtc cannot be loaded here (it ships with torch's CUDA wheels)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_nemo_run_nvrtc_corrupts_the_shared_space_byte_and_the_workaround_prevents_it():
    """NeMo 3.0.0's bug reproduced on a CPU (NVRTC compiles without a GPU): after one kernel compile with an empty
    log, the `b" "` NeMo repeats for its buffers reads NUL; with the workaround it stays a space."""
    if "nvrtc-private-log-buffer" not in decoding.apply_nemo_workarounds() and not decoding.nemo_shares_nvrtc_log_buffer():
        pytest.skip("the installed NeMo no longer shares the log buffer (the workaround is not applied)")
    broken = _nvrtc_probe(patch=False)
    assert "after compile" in broken and broken.strip().endswith("space False"), broken
    mended = _nvrtc_probe(patch=True)
    assert "applied ('nvrtc-private-log-buffer',)" in mended and mended.strip().endswith("space True"), mended


def test_the_workaround_applies_only_to_a_nemo_that_shares_the_buffer():
    assert decoding._SHARED_LOG_BUFFER.search('    buf = b" " * size\n')
    assert decoding._SHARED_LOG_BUFFER.search("    ptx = b' ' * ptxSize\n")
    # What a fixed NeMo writes instead (a private, writable buffer) needs nothing.
    assert not decoding._SHARED_LOG_BUFFER.search("    buf = bytearray(size)\n")
    assert not decoding._SHARED_LOG_BUFFER.search('    buf = b"  " * size\n')


def _audios() -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal(16000 * (i + 1)).astype(np.float32) * 0.1 for i in range(3)]


def _tiny(en_tok_dir):
    from enhi.tiny_model import TINY, build_parakeet_model
    from enhi.transplant import install_cpu_tdt_loss

    model = build_parakeet_model(en_tok_dir, seed=0, **TINY)
    install_cpu_tdt_loss(model)
    return model


def test_every_mode_gives_the_same_transcripts_and_is_the_one_in_force(en_tok_dir):
    from enhi.evaluate import transcribe_audio

    model = _tiny(en_tok_dir)
    assert decoding.decoder_cuda_graphs(model) == "nemo"  # NeMo's default: graphs allowed
    audios = _audios()
    before = transcribe_audio(model, audios, batch_size=3)
    ctc_before = transcribe_audio(model, audios, batch_size=3, decoder="ctc")
    assert sum(map(len, before)) > 0  # random weights still emit tokens: the comparison compares something
    model.cur_decoder = "ctc"
    for mode in decoding.DECODER_CUDA_GRAPHS:
        decoding.set_decoder_cuda_graphs(model, mode)
        assert decoding.decoder_cuda_graphs(model) == mode
        assert model.cfg.decoding.greedy.use_cuda_graph_decoder is (mode != "disabled")
        assert model.cur_decoder == "ctc"  # the hybrid's active head is left as it was
        assert transcribe_audio(model, audios, batch_size=3) == before, mode
        assert transcribe_audio(model, audios, batch_size=3, decoder="ctc") == ctc_before
        assert decoding.decoding_problems(model) == []
    from enhi.errors import UserError

    with pytest.raises(UserError, match="decoder_cuda_graphs='off'"):
        decoding.set_decoder_cuda_graphs(model, "off")


def test_disabled_graphs_outlive_change_vocabulary_and_save(en_tok_dir, tmp_path):
    """NeMo rebuilds the decoding from model.cfg.decoding when the vocabulary changes, and a saved .nemo carries
    the setting, so stock NeMo decodes it without graphs too."""
    from nemo.collections.asr.models import ASRModel

    from enhi.transplant import change_vocabulary

    model = _tiny(en_tok_dir)
    decoding.set_decoder_cuda_graphs(model, "disabled")
    change_vocabulary(model, str(MERGED_DIR))
    assert decoding.decoder_cuda_graphs(model) == "disabled" and decoding.decoding_problems(model) == []
    model.save_to(str(tmp_path / "m.nemo"))
    restored = ASRModel.restore_from(str(tmp_path / "m.nemo"), map_location="cpu")
    assert not restored.decoding.decoding.decoding_computer.allow_cuda_graphs


def test_a_forced_mode_survives_change_vocabulary(en_tok_dir):
    from enhi.transplant import change_vocabulary

    model = _tiny(en_tok_dir)
    decoding.set_decoder_cuda_graphs(model, "no_while_loops")
    change_vocabulary(model, str(MERGED_DIR))
    assert decoding.decoder_cuda_graphs(model) == "no_while_loops"


@pytest.mark.parametrize("variant", ["birwkv7", "adapters"])
def test_decoding_invariants_after_each_change_of_layers(en_tok_dir, variant):
    """The recipe's order: change_vocabulary + transplant, the BiRWKV7 conversion (or adapters, which NeMo has only
    for attention encoders), configure_model (spec-augment, loss, adapters, optimizer groups), optimizer setup.
    After each the decoding decodes with the model's own decoder and joint, blank = tokenizer size, the loss's
    durations, nothing captured."""
    from birwkv7.convert import convert_to_birwkv7
    from enhi.config import load_run_config
    from enhi.evaluate import transcribe_audio
    from enhi.training import configure_model
    from enhi.transplant import change_vocabulary

    model = _tiny(en_tok_dir)
    old_blank = model.tokenizer.vocab_size
    change_vocabulary(model, str(MERGED_DIR), True, "mean")
    assert model.tokenizer.vocab_size > old_blank
    assert decoding.decoding_problems(model) == []
    overrides = ["trainer.max_steps=10"]
    if variant == "birwkv7":
        convert_to_birwkv7(model, head_size=None, init="attention")
    else:
        overrides.append("model.adaptation.adapter_dim=8")
    _, cfg = load_run_config({}, ROOT / "ft_110M_enhi.yaml", DEMO_SETTINGS + overrides)
    configure_model(model, cfg, bnb_optim=False)
    assert decoding.decoding_problems(model) == [] and decoding.decoder_cuda_graphs(model) == "disabled"
    model.setup_optimization(optim_config=model.cfg.optim)
    assert decoding.decoding_problems(model) == []
    assert transcribe_audio(model, _audios(), batch_size=3)  # and it decodes


def test_decoding_problems_finds_a_stale_or_captured_decoding(en_tok_dir):
    """What the check catches, each on a deliberately broken model."""
    import copy

    model = _tiny(en_tok_dir)
    assert decoding.decoding_problems(model) == []
    stale = copy.deepcopy(model.joint)
    model.joint = stale  # a layer replaced without a fresh decoding
    assert any("another decoder or joint" in p for p in decoding.decoding_problems(model))
    decoding.set_decoder_cuda_graphs(model)
    assert decoding.decoding_problems(model) == []
    computer = decoding.label_looping_computer(model)
    computer.state = object()  # as if graphs had been captured
    assert any("captured" in p for p in decoding.decoding_problems(model))
    decoding.set_decoder_cuda_graphs(model)
    model.decoding.blank_id += 1
    assert any("blank" in p for p in decoding.decoding_problems(model))
    decoding.set_decoder_cuda_graphs(model)
    computer = decoding.label_looping_computer(model)
    computer.durations = torch.tensor([0, 1, 2])
    assert any("durations" in p for p in decoding.decoding_problems(model))
