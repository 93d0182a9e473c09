r"""Evaluate any .nemo on any manifests: predictions as JSON lines, WER and CER per language.

    uv run eval_nemo.py --model runs/ft_110M_enhi/checkpoints/ft_110M_enhi.nemo \
        --manifest en_test.json --manifest hi_test.json --out predictions.jsonl

Utterances are grouped by their manifest's `lang` field (else by manifest file name). Text is normalized the
same way for reference and hypothesis: Unicode NFC, punctuation removed, Latin lower-cased, Devanagari as is.

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
    p.add_argument("--model", required=True, help="a .nemo checkpoint")
    p.add_argument("--manifest", action="append", required=True, help="a NeMo manifest; repeat for several")
    p.add_argument("--out", required=True, help="predictions, JSON lines (written whole or not at all)")
    p.add_argument("--decoder", choices=["tdt", "ctc"], default="tdt", help="which head transcribes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lang-hint", action="store_true", help="also decode each language with its own tokens only")
    p.add_argument("--decoder-cuda-graphs", choices=DECODER_CUDA_GRAPHS, default=DEFAULT_DECODER_CUDA_GRAPHS,
                   help="NeMo's greedy TDT decoder on a GPU: CUDA graphs disabled (default), NeMo's choice, or a "
                        "NeMo mode forced (enhi/decoding.py)")
    args = p.parse_args(argv)

    from enhi.atomic import atomic_file
    from enhi.evaluate import error_rates, transcribe_entries
    from enhi.lang_hint import restricted_to
    from enhi.manifest import read_manifest
    from enhi.training import load_nemo_file

    groups: dict[str, list] = {}
    for path in args.manifest:
        for e in read_manifest(path):
            groups.setdefault(e.lang or Path(path).stem, []).append(e)
    model = load_nemo_file(args.model, decoder_cuda_graphs=args.decoder_cuda_graphs)

    rows, table = [], []
    for lang, entries in groups.items():
        hyps = transcribe_entries(model, entries, args.batch_size, args.decoder, progress=f"{lang} ({len(entries)} utterances)")
        r = error_rates([e.text for e in entries], hyps)
        line = f"{lang:>8} {len(entries):>6} {r['wer']:>7.3f} {r['cer']:>7.3f}"
        preds = [{"audio_filepath": e.audio_filepath, "lang": lang, "text": e.text, "pred_text": h} for e, h in zip(entries, hyps, strict=True)]
        if args.lang_hint:
            with restricted_to(model, lang):
                hinted = transcribe_entries(model, entries, args.batch_size, args.decoder, progress=f"{lang}, hint")
            rh = error_rates([e.text for e in entries], hinted)
            line += f" {rh['wer']:>10.3f} {rh['cer']:>10.3f}"
            for row, h in zip(preds, hinted, strict=True):
                row["pred_text_hint"] = h
        table.append(line)
        rows += preds
    with atomic_file(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{'lang':>8} {'utts':>6} {'WER':>7} {'CER':>7}" + (f" {'WER (hint)':>10} {'CER (hint)':>10}" if args.lang_hint else ""))
    print("\n".join(table))
    print(f"predictions written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
