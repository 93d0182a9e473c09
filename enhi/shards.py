"""Sharded training data: NeMo tarred audio datasets and Lhotse Shar folders, made from a plain manifest and
read back from their metadata.

    uv run python -m enhi.shards shar   en_train.json shards/en_shar   --shard-size 1000
    uv run python -m enhi.shards tarred en_train.json shards/en_tarred --num-shards 8

`shar` is Lhotse's own writer (`CutSet.to_shar`, FLAC audio) over NeMo's own manifest reader. `tarred` writes the
layout of NeMo's `scripts/speech_recognition/convert_to_tarred_audio_dataset.py` (audio_<k>.tar, one manifest
per shard with `shard_id`, and the whole manifest), for users without a NeMo checkout; NeMo's tarred reader
(`LazyNeMoTarredIterator`) is what trains from it. Each command prints the `model.train_ds.manifests` entry
to paste into the YAML. Output appears whole or not at all (written to a temporary folder, then renamed).

The data check (`enhi.datacheck`) reads sharded sources through `tarred_entries` and `shar_entries`: the
utterances, durations and transcripts come from the manifests or cut records, the tars are scanned header by
header (no audio is decoded), and a missing, truncated or incomplete shard is a `UserError` naming it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from enhi.atomic import atomic_dir
from enhi.errors import UserError, exit_on_user_error
from enhi.manifest import read_manifest


@dataclass(frozen=True)
class ShardEntry:
    """One utterance of a sharded source, from its metadata: where its record is and what it says."""

    where: str  # file:line of the metadata record, for messages
    duration: float
    text: str
    sample_rate: int | None = None  # Shar records carry it; NeMo tarred manifests do not


def expand(pattern: str) -> list[str]:
    """The paths of a NeMo brace pattern (`audio_{0..7}.tar`, or `audio__OP_0..7_CL_.tar` as NeMo writes it
    where braces would clash with YAML), by NeMo's own expansion."""
    from nemo.collections.common.data.lhotse.nemo_adapters import expand_sharded_filepaths

    return [str(p) for p in expand_sharded_filepaths(str(pattern))]


def tar_members(path: str | Path) -> list[str]:
    """Member names of a tar, from its headers alone; a missing, unreadable or truncated tar is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: shard not found; check the brace pattern or re-create the shards")
    size = path.stat().st_size
    names = []
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:  # each header is read and the member's data skipped by a seek
                if m.offset_data + m.size > size:
                    raise UserError(f"{path}: truncated shard (member {m.name} ends past the end of the file); "
                                    "re-create or re-copy it")
                names.append(m.name)
            end = tar.offset  # where the end-of-archive marker (two zero blocks) must start
        with open(path, "rb") as f:
            f.seek(end)
            marker = f.read(2 * tarfile.BLOCKSIZE)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{path}: not a readable tar ({' '.join(str(e).split())}); re-create or re-copy it") from None
    if marker != bytes(2 * tarfile.BLOCKSIZE):  # cut at a member boundary: every header fine, the end missing
        raise UserError(f"{path}: truncated shard (no end-of-archive marker after {len(names)} members); "
                        "re-create or re-copy it")
    return names


_TAR_ID = re.compile(r"audio[^/]*_(\d+)[^/]*\.tar$")  # how NeMo's tarred reader finds a tar's shard id


def tarred_entries(manifest: str, tarred_audio_filepaths: str) -> list[ShardEntry]:
    """Every utterance of a NeMo tarred dataset; checks that each manifest line's audio is in its shard's tar."""
    tars = {}
    for p in expand(tarred_audio_filepaths):
        m = _TAR_ID.search(p)
        if m is None:
            raise UserError(f"{p}: NeMo's tarred reader needs tar names like audio_<shard id>.tar")
        tars[int(m.group(1))] = p
    members = {sid: set(tar_members(p)) for sid, p in tars.items()}
    out = []
    for path in expand(manifest):
        if not Path(path).is_file():
            raise UserError(f"{path}: tarred manifest not found; check the brace pattern in `path`")
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    item = json.loads(line)
                    sid, name = int(item["shard_id"]), str(item["audio_filepath"])
                    duration, text = float(item["duration"]), str(item["text"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise UserError(f"{where}: a tarred manifest line needs audio_filepath, duration, text and "
                                    f"shard_id ({type(e).__name__}: {e})") from None
                if sid not in tars:
                    raise UserError(f"{where}: shard_id {sid} has no tar in tarred_audio_filepaths "
                                    f"({tarred_audio_filepaths}); add the shard or fix the pattern")
                if name not in members[sid]:
                    raise UserError(f"{where}: {name} is not in {tars[sid]}; the shard is incomplete, re-create it")
                out.append(ShardEntry(where, duration, text))
    if not out:
        raise UserError(f"{manifest}: tarred manifest is empty")
    return out


def shar_entries(shar_dir: str | Path) -> list[ShardEntry]:
    """Every cut of a Lhotse Shar folder, from its `cuts.*.jsonl.gz`; checks each has its audio in the shard's
    `recording.*.tar` (and each cuts file its tar)."""
    shar_dir = Path(shar_dir)
    if not shar_dir.is_dir():
        raise UserError(f"{shar_dir}: Lhotse Shar folder not found; check `path` (a folder with cuts.*.jsonl.gz)")
    cut_files = sorted(shar_dir.glob("cuts.*.jsonl*"))
    if not cut_files:
        raise UserError(f"{shar_dir}: no cuts.*.jsonl.gz inside; not a Lhotse Shar folder")
    out = []
    for cf in cut_files:
        index = cf.name.split(".")[1]
        tar = shar_dir / f"recording.{index}.tar"
        members = {Path(m).stem for m in tar_members(tar)}  # <cut id>.flac and its <cut id>.json record
        opener = gzip.open if cf.suffix == ".gz" else open
        try:
            with opener(cf, "rt", encoding="utf-8") as f:
                lines = list(f)
        except (OSError, EOFError) as e:
            raise UserError(f"{cf}: unreadable ({' '.join(str(e).split())}); re-create or re-copy the shard") from None
        for n, line in enumerate(lines, 1):
            where = f"{cf}:{n}"
            try:
                cut = json.loads(line)
                rec = cut["recording"]
                text = " ".join(s.get("text") or "" for s in cut.get("supervisions", []))
                entry = ShardEntry(where, float(cut["duration"]), text, int(rec["sampling_rate"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise UserError(f"{where}: not a Lhotse cut record ({type(e).__name__}: {e})") from None
            if cut["id"] not in members:
                raise UserError(f"{where}: cut {cut['id']} has no audio in {tar}; the shard is incomplete, re-create it")
            out.append(entry)
    return out


def source_entries(spec) -> list[ShardEntry]:
    """The metadata of one sharded `model.train_ds.manifests` entry (`type` nemo_tarred or lhotse_shar)."""
    if spec.type == "nemo_tarred":
        return tarred_entries(str(spec.path), str(spec.tarred_audio_filepaths))
    return shar_entries(spec.path)


# ---------------------------------------------------------------------------------------------------------
# Writers
def write_shar(manifest: str | Path, out_dir: str | Path, shard_size: int = 1000, force: bool = False) -> Path:
    """A Lhotse Shar folder of `manifest` (FLAC audio, `shard_size` cuts a shard), by Lhotse's own writer."""
    from lhotse import CutSet
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoIterator

    read_manifest(manifest)  # a one-line error for a bad manifest or a missing audio file, before any work
    with atomic_dir(out_dir, force=force) as tmp:
        cuts = CutSet(LazyNeMoIterator(str(manifest)))
        cuts.to_shar(tmp, fields={"recording": "flac"}, shard_size=shard_size)
    return Path(out_dir)


def write_tarred(manifest: str | Path, out_dir: str | Path, num_shards: int = 8, force: bool = False) -> Path:
    """A NeMo tarred dataset of `manifest`: `num_shards` tars of consecutive utterances, in NeMo's layout."""
    entries = read_manifest(manifest)
    lines = [json.loads(x) for x in Path(manifest).read_text(encoding="utf-8").splitlines() if x.strip()]
    num_shards = max(1, min(num_shards, len(entries)))
    with atomic_dir(out_dir, force=force) as tmp:
        (tmp / "sharded_manifests").mkdir()
        everything = []
        for sid in range(num_shards):
            lo, hi = sid * len(entries) // num_shards, (sid + 1) * len(entries) // num_shards
            shard = []
            with tarfile.open(tmp / f"audio_{sid}.tar", "w") as tar:
                for i in range(lo, hi):
                    src = Path(entries[i].audio_filepath)
                    name = f"{i:08d}_{src.name}"  # unique inside the tar even when basenames repeat
                    tar.add(src, arcname=name)
                    shard.append({**lines[i], "audio_filepath": name, "duration": entries[i].duration, "shard_id": sid})
            text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in shard)
            (tmp / "sharded_manifests" / f"manifest_{sid}.json").write_text(text, encoding="utf-8")
            everything.append(text)
        (tmp / "tarred_audio_manifest.json").write_text("".join(everything), encoding="utf-8")
    return Path(out_dir)


def tarred_patterns(out_dir: str | Path) -> tuple[str, str]:
    """(manifest pattern, tar pattern) of a folder `write_tarred` made, in NeMo's YAML-safe brace form."""
    n = len(list(Path(out_dir).glob("audio_*.tar")))
    rng = f"_OP_0..{n - 1}_CL_"
    return f"{out_dir}/sharded_manifests/manifest_{rng}.json", f"{out_dir}/audio_{rng}.tar"


@exit_on_user_error
def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m enhi.shards", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("shar", "tarred"), help="Lhotse Shar folder or NeMo tarred dataset")
    p.add_argument("manifest", help="plain NeMo manifest (audio_filepath, duration, text)")
    p.add_argument("out", help="output folder")
    p.add_argument("--shard-size", type=int, default=1000, help="shar: cuts per shard")
    p.add_argument("--num-shards", type=int, default=8, help="tarred: number of tar files")
    p.add_argument("--lang", default="xx", help="language tag printed in the config entry")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    a = p.parse_args(argv)
    if a.kind == "shar":
        out = write_shar(a.manifest, a.out, a.shard_size, a.force)
        n = len(list(out.glob("cuts.*")))
        print(f"{out}: {n} Lhotse Shar shard(s)\nmodel.train_ds.manifests entry: "
              f"{{type: lhotse_shar, path: {out}, lang: {a.lang}, weight: 1.0}}")
    else:
        out = write_tarred(a.manifest, a.out, a.num_shards, a.force)
        man, tars = tarred_patterns(out)
        print(f"{out}: {len(list(out.glob('audio_*.tar')))} NeMo tar shard(s)\nmodel.train_ds.manifests entry: "
              f"{{type: nemo_tarred, path: {man}, tarred_audio_filepaths: {tars}, lang: {a.lang}, weight: 1.0}}")


if __name__ == "__main__":
    main(sys.argv[1:])
