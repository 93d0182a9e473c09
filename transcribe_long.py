"""Transcribe one audio file of any length with a .nemo model (BiRWKV7 or attention encoder).

    uv run transcribe_long.py --model converted.nemo --audio talk.wav                 # one pass
    uv run transcribe_long.py --model model.nemo --audio talk.wav --chunk-s 300 --out talk.txt

The transcript goes to stdout (or whole to --out), then one line with duration, wall time and RTFx. Without
--chunk-s the file goes through the model in one pass (a BiRWKV7 encoder takes hours of audio on one GPU); if
that runs out of memory it falls back to 480 s chunks. With --chunk-s N it is cut every N seconds, with a
progress bar on stderr. How it works: enhi/long_audio.py. A missing or unreadable model or audio file stops
with one line naming the file (exit status 2).
"""

import argparse
import sys
from pathlib import Path

from enhi.errors import UserError, exit_on_user_error


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


@exit_on_user_error
def main(argv: list[str]) -> None:
    import torch

    from enhi.long_audio import (
        ChunkBar,
        check_audio_file,
        check_model_file,
        format_report,
        load_model_quietly,
        transcribe_long,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .nemo checkpoint (a fine-tuned using_birwkv7 one fits hours in one pass)")
    p.add_argument("--audio", required=True, help="an audio file of any length (WAV, FLAC, ...; resampled if needed)")
    p.add_argument("--chunk-s", type=_positive_float, default=None,
                   help="cut the audio into chunks of this many seconds, with a progress bar (default: one pass)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="chunks per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the transcript to this file (whole or not at all)")
    args = p.parse_args(argv)

    model_path, audio_path = Path(args.model), Path(args.audio)
    # Every check that needs no model runs first: loading one takes a while.
    check_model_file(model_path)
    check_audio_file(audio_path)
    if args.out is not None and Path(args.out).is_dir():
        raise UserError(f"{args.out}: is a folder; give --out a file name")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA GPU here; pass --device cpu")

    model = load_model_quietly(model_path, args.device)
    bar = ChunkBar()
    try:
        result = transcribe_long(model, audio_path, chunk_s=args.chunk_s, batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    if args.out is None:
        print(result["text"])
    else:
        from enhi.atomic import atomic_file

        with atomic_file(args.out, "w", encoding="utf-8") as f:
            f.write(result["text"] + "\n")
        print(f"transcript written to {args.out} ({len(result['text'].split())} words)")
    print(format_report(result))


if __name__ == "__main__":
    main(sys.argv[1:])
