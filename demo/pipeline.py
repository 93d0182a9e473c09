"""The offline demo around ft_110M_enhi_demo.py: everything a checkpoint and a data set would otherwise give.

1. a synthesized English + Hindi corpus (eSpeak NG, several voices, unseen voices and sentences in validation);
2. the English stand-in for the pretrained model, shipped in assets/standin/ (`demo.standin` then `demo.standin_free`
   made it);
3. the merged English + Hindi tokenizer (merge_token's library, from the shipped tokenizers);
then the script adapts and fine-tunes two arms on the same data and steps (the recipe's defaults from the YAML,
and NeMo's plain `change_vocabulary`), and `demo.report` writes a table, examples and a plot. Steps 1 and 3 and
the stand-in's own scores are cached under `demo_cache/`, so a second run goes straight to adaptation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from demo import standin, standin_free, validation
from demo.common import CACHE, N_VAL, TOKENIZERS, run_config
from enhi.atomic import atomic_file
from enhi.config import ManifestSpec, NamedSet
from enhi.console import phase

# Sizes chosen so the whole demo fits in 15 minutes on a 2-core CPU, from an empty cache.
N_TRAIN = 2000  # distinct training sentences per language (a subset of the stand-in's English ones)
CORPUS = CACHE / "corpus"
FINETUNE_STEPS = 400
FINETUNE_EVERY = 100
FINETUNE_LR = 2e-3  # a small model learns a new script faster at a higher rate than the YAML's (for 110M)
BATCH_DURATION = 30  # seconds of audio per step: small batches, more updates per CPU second
N_EXAMPLES = 3  # validation utterances per language shown with every model's transcript


@dataclass(frozen=True)
class Arm:
    name: str
    transplant: bool


def arms(transplant: bool, offline_demo: bool) -> list[Arm]:
    """The demo compares the recipe with NeMo's plain vocabulary change; a real run does what the switch asks."""
    if offline_demo:
        return [Arm("recipe", True), Arm("plain_change_vocabulary", False)]
    return [Arm("recipe" if transplant else "plain_change_vocabulary", transplant)]


def arm_config(cfg: DictConfig, arm: Arm) -> DictConfig:
    c = run_config(cfg, arm.name, FINETUNE_STEPS, FINETUNE_EVERY, BATCH_DURATION)
    c.model.optim.lr = FINETUNE_LR
    return c


def _merged_tokenizer_dir(standin_nemo: Path) -> Path:
    from enhi.tokenizer_merge import merge_to_folder

    out = CACHE / "tokenizer_en1024_hi256"
    if not (out / "merge_report.json").is_file():
        merge_to_folder(base=str(standin_nemo), new=str(TOKENIZERS / "hi256"), out_dir=out, force=True)
    return out


def prepare(cfg: DictConfig, retrain_standin: bool = False) -> DictConfig:
    """Steps 1-3 of the demo (cached); returns the run config pointed at the demo's data, model and tokenizer."""
    from demo.corpus import build_corpus

    with phase("corpus"):
        info = build_corpus(CORPUS, n_train_per_lang=N_TRAIN, n_val_per_lang=N_VAL, seed=0)
        print(f"{info['counts']}, {info['total_hours']:.2f} h" + (" (cached)" if info["cached"] else ""))
        man = info["manifests"]
        val = validation.build(man)["manifests"]  # half templates, half free text: the languages, not the corpus
    with phase("English stand-in"):
        model_path = standin_free.ensure(cfg, retrain=retrain_standin)
        print(model_path)
    with phase("merged tokenizer"):
        tok = _merged_tokenizer_dir(model_path)
        print(tok)
    cfg = copy.deepcopy(cfg)
    cfg.init_from_nemo_model = str(model_path)
    cfg.model.tokenizer.dir = str(tok)
    # Fine-tune with the augmentation the starting model was trained with (the YAML's is Parakeet's own, far
    # heavier than the stand-in's): a change of augmentation alone moves a pretrained model's English.
    cfg.model.spec_augment = standin.SPEC_AUGMENT
    cfg.model.train_ds.manifests = [ManifestSpec(man["en_train"], "en", 0.5), ManifestSpec(man["hi_train"], "hi", 0.5)]
    cfg.model.validation_ds.sets = [NamedSet("en", val["en"], "en"), NamedSet("hi", val["hi"], "hi")]
    return cfg


def standin_scores(cfg: DictConfig) -> dict:
    """The stand-in before adaptation on the validation sets, with its first transcripts (cached per file)."""
    from enhi.evaluate import evaluate_sets
    from enhi.training import eval_sets, load_model

    h = hashlib.sha256(Path(cfg.init_from_nemo_model).read_bytes())
    for s in cfg.model.validation_ds.sets:  # the same model on other validation sets scores anew
        h.update(Path(s.path).read_bytes())
    digest = h.hexdigest()[:16]
    path = CACHE / f"standin_scores_{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model = load_model(cfg)
    r = evaluate_sets(model, eval_sets(cfg.model.validation_ds), cfg.model.validation_ds.batch_size)
    scores = {name: {**{k: v for k, v in x.items() if k != "predictions"}, "examples": x["predictions"][:N_EXAMPLES]}
              for name, x in r.items()}
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=1, ensure_ascii=False)
    return scores


def arm_results(run_cfg: DictConfig, val, timer) -> dict:
    """What the report needs from one arm: its validation curve, step times, first transcripts and .nemo path."""
    nemo = sorted((Path(run_cfg.exp_manager.exp_dir) / run_cfg.exp_manager.name).rglob("*.nemo"))
    return {
        "history": val.history,
        "step_seconds": timer.times,
        "examples": {name: preds[:N_EXAMPLES] for name, preds in val.last_predictions.items()},
        "nemo": str(nemo[-1]) if nemo else None,
    }


def report(cfg: DictConfig, results: dict) -> Path:
    from demo import report as rep

    out = rep.write(standin_scores(cfg), results)
    for name, r in results.items():
        if r["nemo"]:
            print(f"{name}: final model {r['nemo']} (evaluate it with eval_nemo.py, deploy it with export_onnx.py)")
    return out
