r"""Evaluate any .nemo on any manifests: predictions as JSON lines, WER and CER per language.

    uv run eval_nemo.py --model runs/ft_110M_enhi/checkpoints/ft_110M_enhi.nemo \
        --manifest en_test.json --manifest hi_test.json --out predictions.jsonl

    uv run eval_nemo.py --score predictions.jsonl        # re-score a predictions file, no model needed

Utterances are grouped by their manifest's `lang` field (else by manifest file name). Each language gets the
project's score, as training validation computes it (references as training text per the YAML's model.text,
then NFC, punctuation to spaces, Latin lower-cased; utterances the settings drop are not scored), and its
benchmark score on the manifest's own references: Vistaar's for Indic languages, the Open ASR Leaderboard's
(Whisper's English normalizer) for English (enhi/scoring.py). Predictions carry both references (`text`,
`raw_text`). The last line printed is one JSON object {lang: {scheme: {"wer": w, "cer": c}}}.

--lang-hint also decodes each group with only its language's tokens (`en`: the base model's pieces; any other
`lang`: the new pieces and the script-free shared ones; enhi/lang_hint.py) and reports both scores side by
side, for users who know each file's language; predictions then carry `pred_text_hint` too.
"""

import argparse
import json
import sys
from pathlib import Path

from enhi.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str]) -> None:
    from enhi.console import quiet_libraries
    from enhi.decoding import DECODER_CUDA_GRAPHS, DEFAULT_DECODER_CUDA_GRAPHS

    quiet_libraries()  # NeMo's loading messages would bury the table; errors still surface as one line
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a .nemo checkpoint")
    p.add_argument("--manifest", action="append", help="a NeMo manifest; repeat for several")
    p.add_argument("--out", help="predictions, JSON lines (written whole or not at all)")
    p.add_argument("--score", metavar="PREDS.jsonl", help="re-score a predictions file (text, pred_text, lang) instead")
    p.add_argument("--config", default="ft_110M_enhi.yaml", help="the run YAML whose model.text makes the references")
    p.add_argument("--decoder", choices=["tdt", "ctc"], default="tdt", help="which head transcribes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lang-hint", action="store_true", help="also decode each language with its own tokens only")
    p.add_argument("--lang", default="manifest",
                   help="a gated model's path (gate_by_language): manifest = each group on its language's (default), "
                        "auto = the model's router per utterance (routing accuracy printed), or one language for all")
    p.add_argument("--decoder-cuda-graphs", choices=DECODER_CUDA_GRAPHS, default=DEFAULT_DECODER_CUDA_GRAPHS,
                   help="NeMo's greedy TDT decoder on a GPU: CUDA graphs disabled (default), NeMo's choice, or a "
                        "NeMo mode forced (enhi/decoding.py)")
    args = p.parse_args(argv)
    from enhi.scoring import read_predictions, schemes_for, score_all

    if args.score:
        scores = {lang: score_all(refs, hyps, lang, raw) for lang, (refs, hyps, raw) in read_predictions(args.score).items()}
        print(f"{'lang':>8} {'scheme':>8} {'WER':>7} {'CER':>7}")
        for lang, by_scheme in scores.items():
            print("\n".join(f"{lang:>8} {s:>8} {r['wer']:>7.3f} {r['cer']:>7.3f}" for s, r in by_scheme.items()))
        print(json.dumps(scores, ensure_ascii=False))
        return
    if not (args.model and args.manifest and args.out):
        p.error("--model, --manifest and --out are required (or --score PREDS.jsonl alone)")

    from enhi.atomic import atomic_file
    from enhi.evaluate import transcribe_entries
    from enhi.lang_hint import restricted_to
    from enhi.language_gate import AUTO, is_gated, route
    from enhi.manifest import load_audio, read_manifest
    from enhi.text import normalized_entries, normalizers, text_settings_from_yaml
    from enhi.training import load_nemo_file

    text_cfg, tokenizer = text_settings_from_yaml(args.config)
    groups: dict[str, list] = {}
    for path in args.manifest:
        for e in read_manifest(path):
            groups.setdefault(e.lang or Path(path).stem, []).append(e)
    model = load_nemo_file(args.model, decoder_cuda_graphs=args.decoder_cuda_graphs)
    # References as training made them, whatever the model under test can write (the YAML's tokenizer)
    norms = normalizers(text_cfg, set(groups), tokenizer)
    for lang in groups:
        groups[lang], dropped = normalized_entries(groups[lang], norms[lang])
        if dropped:
            print(f"{lang}: {sum(dropped.values())} utterances not scored, dropped by model.text.{lang} ("
                  + ", ".join(f"{k} {n}" for k, n in dropped.most_common()) + ")")
    groups = {lang: entries for lang, entries in groups.items() if entries}

    rows, table, scores = [], [], {}
    gated = is_gated(model)
    for lang, entries in groups.items():
        path = (lang if args.lang == "manifest" else args.lang) if gated else None
        if path == AUTO:  # routed once: the accuracy printed is of the paths decoded
            path = route(model, [load_audio(e.audio_filepath) for e in entries], args.batch_size)
            print(f"{lang}: routed to {lang} {sum(r == lang for r in path) / len(path):.3f} of {len(path)}")
        hyps = transcribe_entries(model, entries, args.batch_size, args.decoder,
                                  progress=f"{lang} ({len(entries)} utterances)", lang=path)
        scores[lang] = score_all([e.text for e in entries], hyps, lang, [e.raw_text for e in entries])
        r = scores[lang]["project"]
        std = schemes_for(lang)[1:]
        line = f"{lang:>8} {len(entries):>6} {r['wer']:>7.3f} {r['cer']:>7.3f}"
        line += (f" {std[0]:>8} {scores[lang][std[0]]['wer']:>7.3f} {scores[lang][std[0]]['cer']:>7.3f}" if std
                 else f" {'-':>8} {'-':>7} {'-':>7}")
        preds = [{"audio_filepath": e.audio_filepath, "lang": lang, "text": e.text, "raw_text": e.raw_text,
                  "pred_text": h} for e, h in zip(entries, hyps, strict=True)]
        if args.lang_hint:
            with restricted_to(model, lang):
                hinted = transcribe_entries(model, entries, args.batch_size, args.decoder, progress=f"{lang}, hint")
            rh = score_all([e.text for e in entries], hinted, lang)["project"]
            line += f" {rh['wer']:>10.3f} {rh['cer']:>10.3f}"
            for row, h in zip(preds, hinted, strict=True):
                row["pred_text_hint"] = h
        table.append(line)
        rows += preds
    with atomic_file(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{'lang':>8} {'utts':>6} {'WER':>7} {'CER':>7} {'standard':>8} {'WER':>7} {'CER':>7}"
          + (f" {'WER (hint)':>10} {'CER (hint)':>10}" if args.lang_hint else ""))
    print("\n".join(table))
    print(f"predictions written to {args.out}")
    print(json.dumps(scores, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
