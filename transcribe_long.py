"""Transcribe one audio file of any length with a .nemo model (BiRWKV7 or attention encoder).

    uv run transcribe_long.py --model model.nemo --audio talk.wav                       # cut at pauses
    uv run transcribe_long.py --model model.nemo --audio talk.wav --timestamps talk.srt  # + segment times
    uv run transcribe_long.py --model converted.nemo --audio talk.wav --mode single     # one pass
    uv run transcribe_long.py --model model.nemo --audio talk.wav --chunk-s 300 --out talk.txt

The transcript goes to stdout (or whole to --out), then one line with duration, wall time and RTFx; the mode
used and why goes to stderr first. Modes: `pauses` (the default: the file is cut in the middle of its pauses
into speech segments of up to 20 s, transcribed in batches; the long-form bench in bench/RESULTS.md keeps
it within 0.03 of per-utterance WER, where one pass lost most words), `single` (one pass; a BiRWKV7 encoder
takes hours of audio on one GPU; 480 s chunks if it runs out of memory) and `chunked` (every --chunk-s
seconds; with --overlap-s the chunks overlap and each word is kept from the chunk that heard it further from
its edge, by the decoder's word times: for a model trained on long segments, where no pauses split the file). --timestamps writes the segments as SRT or JSON (by the file's suffix; JSON also times each word, as
the model's decoder places it). How it works:
enhi/long_audio.py. A missing or unreadable model or audio file stops with one line naming the file (exit 2).
"""

import argparse
import sys
from pathlib import Path

from enhi.errors import UserError, exit_on_user_error

# Why each mode, as the command says it (numbers: bench/RESULTS.md, long-form).
WHY = {
    "pauses": "the default: cut at pauses into speech segments of up to 20 s; on the long-form bench it stays within "
              "0.03 of per-utterance WER, where one pass and fixed chunks lose 0.1-0.3 more",
    "single": "asked for: one pass over the whole file",
    "chunked": "asked for: fixed chunks",
}


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

    from enhi.decoding import DECODER_CUDA_GRAPHS, DEFAULT_DECODER_CUDA_GRAPHS
    from enhi.inputs import check_audio_file, check_model_file
    from enhi.long_audio import (
        MODES,
        ChunkBar,
        format_report,
        load_model_quietly,
        timestamps_text,
        transcribe_long,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .nemo checkpoint (a fine-tuned using_birwkv7 one fits hours in one pass)")
    p.add_argument("--audio", required=True, help="an audio file of any length (WAV, FLAC, ...; resampled if needed)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="pauses (default), single (one pass) or chunked (needs --chunk-s)")
    p.add_argument("--chunk-s", type=_positive_float, default=None,
                   help="cut the audio into chunks of this many seconds (implies --mode chunked)")
    p.add_argument("--overlap-s", type=_positive_float, default=0.0,
                   help="with --chunk-s: chunks overlap by this many seconds and are merged by word times")
    p.add_argument("--timestamps", default=None,
                   help="write segment times and texts to this .srt or .json file (.json: each word's times too)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="chunks per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the transcript to this file (whole or not at all)")
    p.add_argument("--lang", default=None, help="a gated model (gate_by_language): the language's path, or auto for "
                                                "its router, segment by segment (default: the new language's)")
    p.add_argument("--decoder-cuda-graphs", choices=DECODER_CUDA_GRAPHS, default=DEFAULT_DECODER_CUDA_GRAPHS,
                   help="NeMo's greedy TDT decoder on a GPU: CUDA graphs disabled (default), NeMo's choice, or a "
                        "NeMo mode forced (enhi/decoding.py)")
    args = p.parse_args(argv)

    model_path, audio_path = Path(args.model), Path(args.audio)
    # Every check that needs no model runs first: loading one takes a while.
    check_model_file(model_path)
    check_audio_file(audio_path)
    for out in (args.out, args.timestamps):
        if out is not None and Path(out).is_dir():
            raise UserError(f"{out}: is a folder; give a file name")
    if args.timestamps is not None and Path(args.timestamps).suffix not in (".srt", ".json"):
        raise UserError(f"{args.timestamps}: --timestamps writes .srt or .json; name the file so")
    mode = args.mode or ("chunked" if args.chunk_s else "pauses")
    if mode == "chunked" and args.chunk_s is None:
        raise UserError("--mode chunked needs --chunk-s SECONDS")
    if args.overlap_s and (mode != "chunked" or args.overlap_s >= args.chunk_s / 2):
        raise UserError(f"--overlap-s {args.overlap_s:g}: needs --chunk-s and must be under half of it")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA GPU here; pass --device cpu")

    model = load_model_quietly(model_path, args.device, args.decoder_cuda_graphs)
    print(f"mode: {mode} ({WHY[mode] if args.mode or mode == 'pauses' else 'with --chunk-s'})", file=sys.stderr)
    bar = ChunkBar()
    try:
        result = transcribe_long(model, audio_path, chunk_s=args.chunk_s, batch_size=args.batch_size, progress=bar,
                                 mode=mode, words=args.timestamps is not None and args.timestamps.endswith(".json"),
                                 overlap_s=args.overlap_s, lang=args.lang)
    finally:
        bar.close()
    if args.out is None:
        print(result["text"])
    else:
        from enhi.atomic import atomic_file

        with atomic_file(args.out, "w", encoding="utf-8") as f:
            f.write(result["text"] + "\n")
        print(f"transcript written to {args.out} ({len(result['text'].split())} words)")
    if args.timestamps is not None:
        from enhi.atomic import atomic_file

        with atomic_file(args.timestamps, "w", encoding="utf-8") as f:
            f.write(timestamps_text(result, Path(args.timestamps).suffix[1:]))
    print(format_report(result))


if __name__ == "__main__":
    main(sys.argv[1:])
