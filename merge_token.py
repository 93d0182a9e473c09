"""Merge a pretrained model's English tokenizer with a new-language one into one NeMo tokenizer folder.

    uv run merge_token.py --base BASE --new NEW --out DIR [--new-vocab-size N] [--force]

BASE: a SentencePiece .model, a NeMo tokenizer folder, a .nemo checkpoint or a pretrained model name
(e.g. nvidia/parakeet-tdt_ctc-110m). NEW: a .model or tokenizer folder, or a NeMo manifest / text file to
train a BPE tokenizer of --new-vocab-size pieces from. DIR gets tokenizer.model, tokenizer.vocab, vocab.txt
and merge_report.json. Ids 0..V_base-1 stay the base pieces; every run proves it before writing anything.
The library is enhi/tokenizer_merge.py.
"""

from __future__ import annotations

import argparse

from enhi.errors import exit_on_user_error
from enhi.tokenizer_merge import DEFAULT_NEW_VOCAB_SIZE, merge_to_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="English tokenizer: .model, tokenizer folder, .nemo or pretrained name")
    p.add_argument("--new", required=True, help="new-language tokenizer (.model or folder) or text (manifest or .txt)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument(
        "--new-vocab-size",
        type=int,
        default=None,
        help=f"pieces of the tokenizer trained from --new text (default {DEFAULT_NEW_VOCAB_SIZE})",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from enhi.console import quiet_libraries

    quiet_libraries()  # NeMo's import-time telemetry notes would print before the result
    report = merge_to_folder(args.base, args.new, args.out, new_vocab_size=args.new_vocab_size, force=args.force)
    dups = ", ".join(d["piece"] for d in report["duplicates"]) or "none"
    print(
        f"merged {report['base']['size']} base + {report['new']['size']} new pieces -> {report['merged_size']} "
        f"(duplicates dropped: {dups}); all checks passed; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
