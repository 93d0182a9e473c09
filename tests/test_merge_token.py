"""merge_token.py and enhi/tokenizer_merge.py: the merge's guarantees, on the real reference tokenizers and on tiny
tokenizers trained here, every bad input, and a tiny Parakeet model taking the merged folder via change_vocabulary."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

import merge_token
from enhi import tokenizer_merge as tm
from enhi.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# The reference tokenizers as committed under assets/ (byte-identical to ../shared/reference: their sha256 is in
# the committed merge report, which test_committed_folder_is_what_the_readme_command_builds checks).
REF_EN = ROOT / "assets" / "tokenizers" / "en1024" / "tokenizer.model"
REF_HI = ROOT / "assets" / "tokenizers" / "hi256"
COMMITTED = ROOT / "en1024_hi256"
P = spm_pb2.ModelProto.SentencePiece

EN_LINES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "hello world, this is a test of the tokenizer.",
    "what is the weather like today?",
    "I think that we should go there now!",
    "it's a long way to the top if you want to rock",
    "numbers are spelled out like twenty one",
    "jazz quiz vex by kings",
] * 4
HI_LINES = list(tm.HINDI_SAMPLE) + [
    "मैं office जा रहा हूँ 2 बजे",
    "यह phone बहुत अच्छा है",
    "आज मौसम बहुत अच्छा है",
    "हम सब मिलकर काम करेंगे",
]


def _train(lines: list[str], vocab_size: int, **kw) -> spm_pb2.ModelProto:
    """A SentencePiece model trained in memory (BPE, no bos/eos, like Parakeet's, unless `kw` says otherwise)."""
    args = dict(model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2, num_threads=1)
    args.update(kw)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size, **args)
    return spm_pb2.ModelProto.FromString(out.getvalue())


def _sp(proto: spm_pb2.ModelProto) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def _crafted(like: spm_pb2.ModelProto, pieces: list[tuple[str, float, int]]) -> spm_pb2.ModelProto:
    """A BPE model with exactly these pieces (and `like`'s normalizer and settings)."""
    m = spm_pb2.ModelProto()
    m.CopyFrom(like)
    del m.pieces[:]
    for s, score, t in pieces:
        q = m.pieces.add()
        q.piece, q.score, q.type = s, score, t
    m.trainer_spec.vocab_size = len(pieces)
    return m


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "en.model"
    path.write_bytes(_train(EN_LINES, 80).SerializeToString())
    return path


def _pieces(sp: spm.SentencePieceProcessor, text: str) -> list[str]:
    return [sp.id_to_piece(i) for i in sp.encode(text)]


# ------------------------------------------------------------------------------- the real reference tokenizers


def test_committed_folder_is_what_the_readme_command_builds(tmp_path, monkeypatch, capsys):
    """The README's merge command, on the committed copies of the references (a clone has no ../shared), rebuilds
    the committed folder byte for byte, report included (its input hashes are the references'); it prints the
    result line and no library chatter."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "en1024_hi256"
    merge_token.main(["--base", str(REF_EN.relative_to(ROOT)), "--new", str(REF_HI.relative_to(ROOT)), "--out", str(out)])
    for name in (*tm.FOLDER_FILES, tm.REPORT_NAME):
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), f"{name} differs from the committed one"
    report = json.loads((COMMITTED / tm.REPORT_NAME).read_text(encoding="utf-8"))
    assert (report["base"]["source"], report["new"]["source"]) == ("assets/tokenizers/en1024/tokenizer.model",
                                                                   "assets/tokenizers/hi256")
    printed = capsys.readouterr()
    assert printed.out.startswith("merged 1024 base + 256 new pieces -> 1278") and printed.err == ""


def test_committed_report_numbers():
    report = json.loads((COMMITTED / tm.REPORT_NAME).read_text(encoding="utf-8"))
    assert (report["base"]["size"], report["new"]["size"], report["merged_size"]) == (1024, 256, 1278)
    assert [d["piece"] for d in report["duplicates"]] == ["<unk>", "▁"]
    assert report["dropped_specials"] == []
    v = report["verification"]
    assert v["base_ids_unchanged"] == 1024 and v["new_pieces_appended"] == 254 and v["distinct_pieces"] == 1278
    assert v["nemo"] == {"vocab_size": 1278, "distinct_pieces": 1278}
    assert v["characters"]["shared"] == ["▁"]
    english = v["encodings"]["english_sample"]
    assert english["base_ids"]["identical_texts"] == english["texts"] == len(tm.ENGLISH_SAMPLE)
    every_hindi_piece = v["encodings"]["every_new_piece"]
    assert every_hindi_piece["new_pieces"]["identical_texts"] == every_hindi_piece["texts"] > 500
    for group in v["encodings"].values():
        trip = group["round_trip"]
        assert trip["ok"] > 0 and trip["ok"] + trip["skipped_unknown_characters"] == group["texts"]
    assert v["highest_new_score"] < v["lowest_base_score"]


def test_real_english_ids_are_identical():
    base, merged = _sp(tm.load_model_file(REF_EN)), _sp(tm.load_model_file(COMMITTED / "tokenizer.model"))
    v = base.get_piece_size()
    assert merged.get_piece_size() == 1278
    for i in range(v):
        assert (merged.id_to_piece(i), merged.get_score(i), merged.is_unknown(i)) == (
            base.id_to_piece(i),
            base.get_score(i),
            base.is_unknown(i),
        )
    texts = list(tm.ENGLISH_SAMPLE) + tm.synthetic_texts(tm.load_model_file(REF_EN)) + [" ".join(EN_LINES)]
    assert [merged.encode(t) for t in texts] == [base.encode(t) for t in texts]
    assert all(i < v for t in texts for i in merged.encode(t))


def test_real_hindi_segmentation_is_identical():
    hi_proto = tm.load_model_file(REF_HI / "tokenizer.model")
    hi, merged = _sp(hi_proto), _sp(tm.load_model_file(COMMITTED / "tokenizer.model"))
    base_chars = tm.alphabet(tm.load_model_file(REF_EN)) - {"▁"}
    # Hindi text without the characters only English has (',' '?' '!' '.'), where the pieces must match exactly.
    texts = [t for t in tm.HINDI_SAMPLE + tuple(tm.synthetic_texts(hi_proto)) if base_chars.isdisjoint(t)]
    assert len(texts) > 500
    assert [_pieces(merged, t) for t in texts] == [_pieces(hi, t) for t in texts]
    # Every Hindi piece keeps its own id offset: merged id = 1024 + position among the appended pieces.
    assert merged.piece_to_id("▁क") == 1024 and merged.piece_to_id("▁") == 966


def test_real_mixed_script_text_keeps_each_languages_tokens():
    en, hi = _sp(tm.load_model_file(REF_EN)), _sp(tm.load_model_file(REF_HI / "tokenizer.model"))
    merged = _sp(tm.load_model_file(COMMITTED / "tokenizer.model"))
    text = "the meeting कल है at ten"
    assert _pieces(merged, text) == _pieces(en, "the meeting") + _pieces(hi, "कल है") + _pieces(en, "at ten")
    # English tokens keep their base ids in context; only the '▁' before a Hindi word joins the Hindi piece.
    assert merged.encode(text)[:4] == en.encode("the meeting") and merged.encode(text)[-2:] == en.encode("at ten")
    assert _pieces(merged, "Parakeetहिंदी") == _pieces(en, "Parakeet") + ["ह", "ि", "ंद", "ी"]


def test_writer_reproduces_the_reference_nemo_files(tmp_path):
    tm.write_nemo_tokenizer_folder(REF_HI / "tokenizer.model", tmp_path / "hi")
    for name in ("tokenizer.model", "tokenizer.vocab", "vocab.txt"):
        assert (tmp_path / "hi" / name).read_bytes() == (REF_HI / name).read_bytes(), name


def test_real_base_with_a_hindi_model_from_todays_sentencepiece(tmp_path):
    """Today's nmt_nfkc table differs from the one in Parakeet's tokenizer: a .model trained now is refused,
    while text given to the merge is trained with the base's own normalizer and merges cleanly."""
    base = tm.load_model_file(REF_EN)
    todays = _train(HI_LINES, 120, normalization_rule_name="nmt_nfkc")
    with pytest.raises(UserError, match="both 'nmt_nfkc', but with different character tables"):
        tm.merge_models(base, todays)
    new = tm.train_new_tokenizer(HI_LINES, base, 120)
    assert new.normalizer_spec == base.normalizer_spec
    result = tm.merge_models(base, new)
    checks = tm.verify_merge(base, new, result, HI_LINES)
    assert checks["encodings"]["english_sample"]["base_ids"]["tokens_compared"] > 200
    assert len(result.proto.pieces) == 1024 + 120 - 2


# ------------------------------------------------------------------------------------------ the score rule


def _rule_pair(tiny_en_proto: spm_pb2.ModelProto) -> tuple[spm_pb2.ModelProto, spm_pb2.ModelProto]:
    """Base merges 'bx' before 'ab'; the new model has 'xक'. On 'abxक' the two compete for the 'x'."""
    base = _crafted(
        tiny_en_proto,
        [("<unk>", 0, P.UNKNOWN), ("bx", -1, P.NORMAL), ("ab", -2, P.NORMAL), ("▁", -3, P.NORMAL)]
        + [("a", -4, P.NORMAL), ("b", -5, P.NORMAL), ("x", -6, P.NORMAL)],
    )
    new = _crafted(
        tiny_en_proto,
        [("<unk>", 0, P.UNKNOWN), ("xक", 0, P.NORMAL), ("▁", -1, P.NORMAL), ("x", -2, P.NORMAL), ("क", -3, P.NORMAL)],
    )
    return base, new


def test_new_pieces_score_below_base_and_keep_their_order(tiny_en):
    base = tm.load_model_file(tiny_en)
    new = tm.train_new_tokenizer(HI_LINES, base, 70)
    result = tm.merge_models(base, new)
    n = len(base.pieces)
    lowest_base = min(p.score for p in base.pieces)
    appended = list(result.proto.pieces)[n:]
    assert all(p.score < lowest_base for p in appended)
    originals = [new.pieces[i].score for i in result.new_ids]
    assert [p.score - s for p, s in zip(appended, originals, strict=True)] == [result.score_offset] * len(appended)
    assert max(p.score for p in appended) == lowest_base - 1


def test_score_rule_keeps_base_segmentation_and_inverting_it_is_caught(tiny_en):
    base, new = _rule_pair(tm.load_model_file(tiny_en))
    result = tm.merge_models(base, new)
    tm.verify_merge(base, new, result)
    sp_base, sp_merged = _sp(base), _sp(result.proto)
    new_only = tm.alphabet(new) - tm.alphabet(base)
    text = "abxक"
    assert _pieces(sp_base, text)[:3] == ["▁", "a", "bx"]
    assert _pieces(sp_merged, text) == ["▁", "a", "bx", "क"]
    assert tm.segmentation_diff(sp_base, sp_merged, text, new_only, by_id=True)[0]

    # Scoring the new pieces above the base (the wrong rule) lets 'xक' take the 'x' first, and 'ab' forms.
    wrong = spm_pb2.ModelProto()
    wrong.CopyFrom(result.proto)
    for p in list(wrong.pieces)[len(base.pieces) :]:
        p.score += 100
    sp_wrong = _sp(wrong)
    assert _pieces(sp_wrong, text) == ["▁", "ab", "xक"]
    assert not tm.segmentation_diff(sp_base, sp_wrong, text, new_only, by_id=True)[0]
    bad = tm.MergeResult(wrong, result.duplicates, result.dropped_specials, result.score_offset + 100, result.new_ids)
    with pytest.raises(tm.MergeCheckError, match="scores"):
        tm.verify_merge(base, new, bad)


def test_new_pieces_made_of_base_characters_are_refused(tiny_en):
    base = tm.load_model_file(tiny_en)
    new = _crafted(base, [("<unk>", 0, P.UNKNOWN), ("zq", 0, P.NORMAL), ("क", -1, P.NORMAL), ("z", -2, P.NORMAL), ("q", -3, P.NORMAL)])
    with pytest.raises(UserError, match="only with characters the base tokenizer has.*'zq'"):
        tm.merge_models(base, new)


def test_base_pieces_made_of_new_characters_are_refused(tiny_en):
    base = tm.load_model_file(tiny_en)
    latin = [p.piece for p in base.pieces if len(p.piece) == 2 and p.type == P.NORMAL and "▁" not in p.piece][0]
    # A "Hindi" model that also knows those two Latin letters: the base's piece could form inside its text.
    new = _crafted(
        base,
        [("<unk>", 0, P.UNKNOWN), ("▁क", 0, P.NORMAL), ("▁", -1, P.NORMAL), ("क", -2, P.NORMAL)]
        + [(ch, -3 - i, P.NORMAL) for i, ch in enumerate(latin)],
    )
    assert latin in tm.conflicting_pieces(base, new)[1]
    with pytest.raises(UserError, match="base pieces are spelled only with characters of the new tokenizer"):
        tm.merge_models(base, new)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(normalization_rule_name="nfkc_cf"), "normalize text differently"),
        (dict(model_type="unigram"), "both must be BPE"),
        (dict(byte_fallback=True, vocab_size=400), "byte_fallback"),
    ],
)
def test_incompatible_new_tokenizers_are_refused(tiny_en, kw, message):
    base = tm.load_model_file(tiny_en)
    kw = {"vocab_size": 70, "hard_vocab_limit": False, **kw}
    new = _train(tm.training_text(HI_LINES, base), **kw)
    with pytest.raises(UserError, match=message):
        tm.merge_models(base, new)


def test_types_and_special_ids_are_preserved():
    base = _train(EN_LINES, 90, bos_id=1, eos_id=2, pad_id=3, control_symbols=["<ctl>"], user_defined_symbols=["<laugh>"])
    hindi = [line for line in HI_LINES if all(ord(c) > 0x900 or c == " " for c in line)]
    new = _train(
        hindi,
        90,
        unk_piece="<UNK>",
        bos_id=1,
        bos_piece="<bos>",
        eos_id=2,
        control_symbols=["<hi>"],
        user_defined_symbols=["<क>"],
    )
    result = tm.merge_models(base, new)
    tm.verify_merge(base, new, result)
    merged = result.proto
    assert list(merged.pieces)[: len(base.pieces)] == list(base.pieces)
    types = {p.piece: p.type for p in merged.pieces}
    assert (types["<ctl>"], types["<laugh>"], types["<hi>"], types["<क>"]) == (P.CONTROL, P.USER_DEFINED, P.CONTROL, P.USER_DEFINED)
    assert "<UNK>" not in types and "<bos>" not in types  # the new model's own specials give way to the base's
    assert sorted(d["piece"] for d in result.dropped_specials) == ["<UNK>", "<bos>"]
    assert {d["piece"] for d in result.duplicates} == {"</s>", "▁"}
    sp_base, sp_merged = _sp(base), _sp(merged)
    ids = lambda sp: (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())  # noqa: E731
    assert ids(sp_merged) == ids(sp_base) == (0, 1, 2, 3)
    assert "<क>" not in tm.nemo_vocab_lines(merged) and "<ctl>" not in tm.nemo_vocab_lines(merged)


def test_byte_fallback_pieces_are_kept_once():
    base = _train(EN_LINES, 400, byte_fallback=True, hard_vocab_limit=False)
    new = _train(tm.training_text(HI_LINES, base), 400, byte_fallback=True, hard_vocab_limit=False)
    result = tm.merge_models(base, new)
    tm.verify_merge(base, new, result)
    byte_pieces = [p.piece for p in result.proto.pieces if p.type == P.BYTE]
    assert len(byte_pieces) == len(set(byte_pieces)) == 256
    assert sum(d["type"] == "BYTE" for d in result.duplicates) == 256


# --------------------------------------------------------------------------- merges of tiny tokenizers, via main()


@pytest.mark.parametrize("kind", ["manifest", "text"])
def test_tiny_merge_trains_the_new_tokenizer_from_text(tmp_path, tiny_en, kind):
    if kind == "manifest":
        new = tmp_path / "hi.json"
        new.write_text("".join(json.dumps({"audio_filepath": f"{i}.wav", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(HI_LINES)), encoding="utf-8")
    else:
        new = tmp_path / "hi.txt"
        new.write_text("\n".join(HI_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    merge_token.main(["--base", str(tiny_en), "--new", str(new), "--out", str(out), "--new-vocab-size", "70"])
    report = json.loads((out / tm.REPORT_NAME).read_text(encoding="utf-8"))
    assert report["new"]["trained_here"] == {"kind": kind, "lines": len(HI_LINES), "vocab_size": 70}
    assert report["new"]["size"] == 70
    assert report["merged_size"] == 80 + 70 - len(report["duplicates"])
    assert [d["piece"] for d in report["duplicates"]] == ["<unk>", "▁"]
    assert report["verification"]["encodings"]["new_language_text"]["texts"] > len(HI_LINES)
    merged = tm.load_model_file(out / "tokenizer.model")
    base_chars = tm.alphabet(tm.load_model_file(tiny_en))
    # Latin letters and digits of the text were left to the base: every new piece has a new character.
    assert all(not set(p.piece) <= base_chars for p in list(merged.pieces)[80:])
    sp_base, sp_merged = _sp(tm.load_model_file(tiny_en)), _sp(merged)
    assert [sp_merged.encode(t) for t in EN_LINES] == [sp_base.encode(t) for t in EN_LINES]
    # Rebuilding with --force gives the same bytes: training and writing are deterministic.
    first = {n: (out / n).read_bytes() for n in (*tm.FOLDER_FILES, tm.REPORT_NAME)}
    merge_token.main(["--base", str(tiny_en), "--new", str(new), "--out", str(out), "--new-vocab-size", "70", "--force"])
    assert {n: (out / n).read_bytes() for n in first} == first


# ----------------------------------------------------------------------------------------------- bad inputs


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "merge_token.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def bad_inputs(tmp_path, tiny_en) -> dict[str, Path]:
    (tmp_path / "wordpiece").mkdir()
    (tmp_path / "wordpiece" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n##lo\n", encoding="utf-8")
    (tmp_path / "notspm.model").write_text("this is not a SentencePiece model\n", encoding="utf-8")
    (tmp_path / "empty.json").write_text("\n\n", encoding="utf-8")
    (tmp_path / "broken.json").write_text('{"text": "नमस्ते"}\n{"text": "दुनिया"}\n{"text": broken\n', encoding="utf-8")
    (tmp_path / "notext.json").write_text('{"text": "नमस्ते"}\n{"audio_filepath": "a.wav"}\n', encoding="utf-8")
    (tmp_path / "hi.txt").write_text("\n".join(HI_LINES) + "\n", encoding="utf-8")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("untouched", encoding="utf-8")
    return {"tmp": tmp_path, "en": tiny_en}


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing base", ["--base", "{tmp}/missing.model", "--new", "{tmp}/hi.txt"], "missing.model: no such file"),
        ("missing new", ["--base", "{en}", "--new", "{tmp}/missing.json"], "missing.json: no such file"),
        ("base not spm", ["--base", "{tmp}/notspm.model", "--new", "{tmp}/hi.txt"], "not a SentencePiece model"),
        ("new not spm", ["--base", "{en}", "--new", "{tmp}/notspm.model"], "not a SentencePiece model"),
        ("wordpiece base", ["--base", "{tmp}/wordpiece", "--new", "{tmp}/hi.txt"], "WordPiece tokenizer folder"),
        ("wordpiece new", ["--base", "{en}", "--new", "{tmp}/wordpiece"], "WordPiece tokenizer folder"),
        ("empty manifest", ["--base", "{en}", "--new", "{tmp}/empty.json"], "empty.json: the manifest is empty"),
        ("not JSON", ["--base", "{en}", "--new", "{tmp}/broken.json"], "broken.json:3: not a JSON line"),
        ("no text", ["--base", "{en}", "--new", "{tmp}/notext.json"], 'notext.json:2: no "text"'),
        ("vocab too small", ["--base", "{en}", "--new", "{tmp}/hi.txt", "--new-vocab-size", "10"], "smaller than the"),
        ("vocab size with a model", ["--base", "{en}", "--new", "{en}", "--new-vocab-size", "10"], "applies only when"),
        ("output exists", ["--base", "{en}", "--new", "{tmp}/hi.txt", "--out", "{tmp}/exists"], "exists; pass --force"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(bad_inputs, case, args, message):
    tmp = bad_inputs["tmp"]
    args = [a.format(tmp=tmp, en=bad_inputs["en"]) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp / "out" / "merged")]
    before = sorted(p.name for p in tmp.iterdir())
    r = _run_cli(*args, cwd=tmp)
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert message in r.stderr, r.stderr
    assert sorted(p.name for p in tmp.iterdir()) == before  # no output folder, no temporary leftovers
    assert (tmp / "exists" / "keep.txt").read_text(encoding="utf-8") == "untouched"
    assert list((tmp / "exists").iterdir()) == [tmp / "exists" / "keep.txt"]


def test_vocab_size_too_small_names_the_character_count(tiny_en):
    base = tm.load_model_file(tiny_en)
    n_chars = len({c for line in tm.training_text(HI_LINES, base) for c in line if c != " "})
    with pytest.raises(UserError, match=f"the {n_chars} characters .* use at least {n_chars + 2}"):
        tm.train_new_tokenizer(HI_LINES, base, n_chars + 1)
    assert len(tm.train_new_tokenizer(HI_LINES, base, n_chars + 2).pieces) == n_chars + 2


def test_pretrained_name_offline_says_to_pass_a_local_file(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    (tmp_path / "hi.txt").write_text("\n".join(HI_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        merge_token.main(["--base", "nvidia/parakeet-tdt_ctc-110m", "--new", str(tmp_path / "hi.txt"), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: nvidia/parakeet-tdt_ctc-110m:") and ".nemo" in err and ".model" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ NeMo models


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny Parakeet model on the real English tokenizer + its .nemo."""
    from enhi.tiny_model import build_parakeet_model

    tmp = tmp_path_factory.mktemp("nemo")
    en_model = REF_EN
    tok_dir = tm.write_nemo_tokenizer_folder(en_model, tmp / "en_tok")
    model = build_parakeet_model(tok_dir)
    nemo = tmp / "tiny.nemo"
    model.save_to(str(nemo))
    return model, nemo, en_model


def test_base_from_a_nemo_checkpoint_or_a_tokenizer_folder(tiny_model):
    _, nemo, en_model = tiny_model
    want = tm.load_model_file(en_model).SerializeToString()
    assert tm.resolve_base(str(nemo)).proto.SerializeToString() == want
    assert tm.resolve_base(str(nemo.parent / "en_tok")).proto.SerializeToString() == want


def test_tiny_model_accepts_the_merged_folder(tiny_model):
    model, _, _ = tiny_model
    import torch

    english = list(tm.ENGLISH_SAMPLE)
    before = [model.tokenizer.text_to_ids(t) for t in english]
    durations = model.joint.num_extra_outputs
    model.change_vocabulary(new_tokenizer_dir=str(COMMITTED), new_tokenizer_type="bpe")
    v = 1278
    assert model.tokenizer.vocab_size == v
    assert model.decoder.prediction["embed"].num_embeddings == v + 1  # + blank
    assert model.joint.joint_net[-1].out_features == v + 1 + durations  # + blank + TDT durations
    assert model.ctc_decoder.decoder_layers[-1].out_channels == v + 1  # + CTC blank
    assert [model.tokenizer.text_to_ids(t) for t in english] == before
    assert len(model.tokenizer.tokenizer.get_vocab()) == v  # NeMo's piece->id dict lost nothing
    with torch.no_grad():
        assert model.tokenizer.ids_to_text(model.tokenizer.text_to_ids("नमस्ते")) == "नमस्ते"
