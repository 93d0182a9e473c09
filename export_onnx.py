"""Export a fine-tuned .nemo to ONNX for onnx-asr (ONNX Runtime on CPU or GPU; no PyTorch or NeMo needed there).

    uv run export_onnx.py --model demo_cache/runs/recipe/<run>/checkpoints/recipe.nemo --out recipe_onnx
    uv run export_onnx.py --model adapted.nemo --out adapted_onnx --int8     # also int8 weights (smaller, faster)
    uv run onnx-asr nemo-conformer-tdt clip.wav -p recipe_onnx [-q int8]    # transcribe (WAV files)

The folder holds NeMo's own export of the encoder and of the TDT decoder + joint, the vocabulary and a small
config (enhi/onnx_export.py says what and why). A BiRWKV7 model is refused with one line; so is a model whose
features or durations onnx-asr would compute differently. bench/RESULTS.md has NeMo vs ONNX float vs int8.
"""

import argparse
import sys
from pathlib import Path

from enhi.errors import UserError, exit_on_user_error


@exit_on_user_error
def main(argv: list[str]) -> None:
    from enhi.console import quiet_libraries

    quiet_libraries()  # NeMo's export chatter would bury the result; errors still surface as one line
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .nemo checkpoint (hybrid TDT-CTC, attention encoder)")
    p.add_argument("--out", required=True, help="a new folder for the ONNX files (written whole or not at all)")
    p.add_argument("--int8", action="store_true", help="also write int8 (dynamic quantization) copies")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--lang", default=None, help="a gated model (gate_by_language): the language's path to export; "
                                                "en gives the pretrained model's graph (default: the new language's)")
    args = p.parse_args(argv)

    from enhi.language_gate import static_path
    from enhi.onnx_export import export_for_onnx_asr, onnx_asr_command
    from enhi.training import load_nemo_file

    if Path(args.out).exists() and not args.force:
        raise UserError(f"{args.out}: output folder exists; pass --force to replace it or choose another --out")
    model = load_nemo_file(args.model)
    with static_path(model, args.lang):
        files = export_for_onnx_asr(model, args.out, source=args.model, int8=args.int8, force=args.force)
    for name, size in files.items():
        print(f"{size / 2**20:8.1f} MiB  {Path(args.out) / name}")
    print(f"transcribe with: {onnx_asr_command(args.out)}")
    if args.int8:
        print(f"int8:            {onnx_asr_command(args.out, int8=True)}")


if __name__ == "__main__":
    main(sys.argv[1:])
