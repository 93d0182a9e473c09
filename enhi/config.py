"""The run configuration: switches at the top of the script, the YAML, and command-line overrides.

`load_run_config` merges, in order: the script's switches and the YAML file, then `key=value` arguments in
OmegaConf dotlist form. A switch is a top-level name (`bnb_optim=true`); anything else is a YAML key
(`trainer.max_steps=1000`). The YAML is checked against the schema below, so a misspelled key is an error
naming the key instead of being silently ignored.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from enhi.decoding import DECODER_CUDA_GRAPHS, DEFAULT_DECODER_CUDA_GRAPHS
from enhi.errors import UserError
from enhi.text import DEFAULTS as TEXT_DEFAULTS
from enhi.text import check_text_settings
from enhi.transplant import NEW_TOKEN_MASS_BOUND

SOURCE_TYPES = ("nemo", "nemo_tarred", "lhotse_shar")


@dataclass
class ManifestSpec:
    """One training source. `python -m enhi.shards` makes the sharded kinds from a plain manifest."""

    # nemo: a manifest (one audio file a line); nemo_tarred: its manifest(s), a brace pattern as NeMo takes them
    # (shards/sharded_manifests/manifest__OP_0..7_CL_.json); lhotse_shar: the Shar folder (cuts.*.jsonl.gz + tars)
    path: str = MISSING
    lang: str = MISSING  # tags every utterance (validation per language, the data check's summary)
    weight: float = 1.0  # sampling weight in the mix
    type: str = "nemo"  # one of SOURCE_TYPES
    tarred_audio_filepaths: str | None = None  # nemo_tarred only: the tars, e.g. shards/audio__OP_0..7_CL_.tar


@dataclass
class NamedSet:
    name: str = MISSING
    path: str = MISSING
    lang: str = MISSING


@dataclass
class TrainDs:
    manifests: list[ManifestSpec] = field(default_factory=list)
    batch_duration: float = 60.0
    num_buckets: int = 4
    min_duration: float = 0.3
    max_duration: float = 20.0
    shuffle: bool = True
    # Dataloader worker processes (decode audio off the training process). Resume after a kill is exact with any
    # number for plain manifests; for sharded sources only with 0 (see enhi.training.train_ds_config).
    num_workers: int = 0


@dataclass
class EvalDs:
    sets: list[NamedSet] = field(default_factory=list)
    batch_size: int = 16


@dataclass
class Tokenizer:
    dir: str = MISSING
    type: str = "bpe"


@dataclass
class Loss:
    sigma: float = 0.02
    omega: float = 0.1


@dataclass
class Sched:
    name: str = "CosineAnnealing"
    warmup_steps: int = 0
    min_lr: float = 1.0e-6
    max_steps: int | None = None


@dataclass
class Optim:
    name: str = "adamw"
    lr: float = 5.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 1.0e-3
    sched: Sched = field(default_factory=Sched)


DISTILL_TARGETS = ("joint", "ctc", "encoder")  # what distillation can match (enhi/forgetting.py)


@dataclass
class Adaptation:
    new_rows: str = "mean"  # "romanized" | "mean": where new token rows start (enhi/transplant.py)
    new_token_mass_bound: float = NEW_TOKEN_MASS_BOUND  # most probability the new tokens may hold at step 0
    new_rows_lr_scale: float = 1.0  # new token rows learn at this x optim.lr (enhi/adaptation.py)
    encoder_lr_scale: float = 1.0  # the pretrained encoder learns at this x optim.lr
    heads_lr_scale: float = 1.0  # prediction network, joint and CTC head (their old rows) at this x optim.lr
    freeze_encoder_steps: int = 0  # encoder held (no update, eval mode) for this many steps
    average_with_pretrained: float = 0.0  # weight of the pretrained model in a final average (0 = off)
    distill_weight: float = 0.0  # distillation from the starting model on old-language utterances (enhi/forgetting.py)
    distill_on: str = "joint"  # one of DISTILL_TARGETS: what the distillation matches
    anchor_weight: float = 0.0  # pull of the pretrained weights toward their start, lr x w x F per step (0 = off)
    anchor_fisher: bool = False  # F = EWC's diagonal Fisher on old-language audio; false = 1 (plain L2)
    fisher_utterances: int = 128  # old-language utterances the Fisher is estimated on
    adapter_dim: int = 0  # > 0: pretrained weights held, residual adapters of this width learn (enhi/adapters.py)
    adapter_l2: float = 0.0  # loss += this x the squared change each adapter makes (NeMo's l2_lambda)
    adapter_dropout: float = 0.0  # dropout inside the adapters
    gate_by_language: bool = False  # English on the pretrained path, bit for bit; adapters for the new language only
    router_utterances: int = 2000  # per language: what the gated mode's language router is fit on


@dataclass
class LangText:
    """How one language's transcripts become training text (enhi/text.py applies them, in its docstring's order)."""

    punctuation: str = TEXT_DEFAULTS["punctuation"]  # auto: marks the language's own pieces write | strip | keep
    digits: str = TEXT_DEFAULTS["digits"]  # verbalize | drop_utterance | keep (digits the tokenizer writes)
    tags: str = TEXT_DEFAULTS["tags"]  # strip | keep: [noise], <laugh>, any [...] or <...>
    unintelligible: str = TEXT_DEFAULTS["unintelligible"]  # drop_utterance | strip: <unintelligible>, [inaudible]
    latin: str = TEXT_DEFAULTS["latin"]  # Latin words in a non-Latin language: keep | strip | drop_utterance
    case: str = TEXT_DEFAULTS["case"]  # keep | lower
    joiners: str = TEXT_DEFAULTS["joiners"]  # delete | keep: ZWJ, ZWNJ, BOM, soft hyphen
    unwritable: str = TEXT_DEFAULTS["unwritable"]  # letters the tokenizer cannot write: drop_utterance | delete


@dataclass
class ModelCfg:
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    train_ds: TrainDs = field(default_factory=TrainDs)
    validation_ds: EvalDs = field(default_factory=EvalDs)
    test_ds: EvalDs = field(default_factory=EvalDs)
    text: dict[str, LangText] = field(default_factory=dict)  # per language; one not listed gets LangText's defaults
    spec_augment: dict[str, Any] = field(default_factory=dict)  # checked against NeMo's class below
    loss: Loss = field(default_factory=Loss)
    ctc_loss_weight: float = 0.3
    adaptation: Adaptation = field(default_factory=Adaptation)
    optim: Optim = field(default_factory=Optim)
    decoder_cuda_graphs: str = DEFAULT_DECODER_CUDA_GRAPHS  # NeMo's greedy TDT decoder on a GPU (enhi/decoding.py)


@dataclass
class RunCfg:
    name: str = "ft_110M_enhi"
    seed: int = 1234
    init_from_pretrained_model: str | None = None
    init_from_nemo_model: str | None = None
    max_consecutive_nonfinite: int = 10
    model: ModelCfg = field(default_factory=ModelCfg)
    trainer: dict[str, Any] = field(default_factory=dict)  # checked against pl.Trainer's signature below
    exp_manager: dict[str, Any] = field(default_factory=dict)  # checked by NeMo's own ExpManagerConfig


def train_manifests(cfg: DictConfig) -> list:
    """`model.train_ds.manifests`, refused when empty (training needs at least one)."""
    if not cfg.model.train_ds.manifests:
        raise UserError("model.train_ds.manifests is empty; list at least one {path, lang, weight}")
    return list(cfg.model.train_ds.manifests)


def sharded_sources(cfg: DictConfig) -> bool:
    """Whether any training source is sharded (nemo_tarred, lhotse_shar): NeMo then streams all of them."""
    return any(s.type != "nemo" for s in cfg.model.train_ds.manifests)


def _parse_value(text: str) -> Any:
    return OmegaConf.create(f"v: {text}")["v"] if text != "" else ""


def _parse_override(arg: str) -> DictConfig:
    """One `key=value` argument as a config; a value that is not valid YAML is one line naming the argument."""
    import yaml

    try:
        return OmegaConf.from_dotlist([arg])
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(
            f"argument {arg!r}: the value is not valid YAML ({problem}); in a path write braces as NeMo's _OP_ and "
            "_CL_ (a_OP_0..3_CL_.tar), or put the path in double quotes"
        ) from None


def _check_kwargs(section: str, given: dict, fn) -> None:
    allowed = set(inspect.signature(fn).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UserError(f"unknown key {section}.{unknown[0]}; valid keys are the arguments of {fn.__qualname__}")


def exit_with_help_if_asked(argv: list[str], usage: str | None, switches: dict[str, Any]) -> None:
    """`-h` / `--help` among the arguments: print the script's usage and its switches, exit 0."""
    if not any(a in ("-h", "--help") for a in argv):
        return
    print((usage or "").strip())
    shown = {k: v for k, v in switches.items() if k != "config"}
    if shown:
        print("\nswitches (key=value): " + ", ".join(f"{k}={v!r}" for k, v in shown.items()))
    print(f"settings: any key of the YAML (config={switches.get('config', 'ft_110M_enhi.yaml')}) as key=value, "
          "e.g. trainer.max_steps=1000; the valid keys are in enhi/config.py")
    raise SystemExit(0)


def load_run_config(switches: dict[str, Any], yaml_path: str | Path, argv: list[str]) -> tuple[dict, DictConfig]:
    """Apply `argv` overrides to the switches and to the YAML; return (switches, validated config).

    `switches` maps each switch name to its default (the script's globals); a switch's type is its default's.
    """
    switches = dict(switches)
    dotlist = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"argument {arg!r}: expected key=value, e.g. bnb_optim=true or trainer.max_steps=1000")
        if key in switches:
            switches[key] = _parse_value(value)
        elif key == "config":
            yaml_path = value
        else:
            dotlist.append(arg)
    yaml_path = Path(switches.get("config", yaml_path))
    cfg = load_yaml(yaml_path, dotlist)
    _check_sections(cfg, yaml_path)
    return switches, cfg


def load_yaml(yaml_path: str | Path, dotlist: list[str] = ()) -> DictConfig:
    """The YAML merged over the schema with `key=value` overrides; the text settings checked. No NeMo import,
    so small commands (`python -m enhi.text`) start fast; `load_run_config` checks the rest."""
    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise UserError(f"{yaml_path}: config file not found; pass config=path/to/file.yaml")
    overrides = OmegaConf.merge(*[_parse_override(arg) for arg in dotlist]) if dotlist else OmegaConf.create()
    try:
        user = OmegaConf.load(yaml_path)
        schema = OmegaConf.structured(RunCfg)
        cfg = OmegaConf.merge(schema, user, overrides)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise UserError(f"{yaml_path}: {msg} (see enhi/config.py for the valid keys)") from None
    for lang, settings in cfg.model.text.items():
        check_text_settings(lang, settings, where=f"{yaml_path}: ")
    return cfg


def _check_sections(cfg: DictConfig, yaml_path: Path) -> None:
    import lightning.pytorch as pl
    from nemo.collections.asr.modules import SpectrogramAugmentation
    from nemo.utils.exp_manager import ExpManagerConfig

    _check_kwargs("trainer", cfg.trainer, pl.Trainer.__init__)
    _check_kwargs("model.spec_augment", cfg.model.spec_augment, SpectrogramAugmentation.__init__)
    try:
        OmegaConf.merge(OmegaConf.structured(ExpManagerConfig), OmegaConf.to_container(cfg.exp_manager, resolve=True))
    except OmegaConfBaseException as e:
        raise UserError(f"{yaml_path}: exp_manager: {str(e).splitlines()[0]}") from None
    for i, s in enumerate(cfg.model.train_ds.manifests):
        where = f"{yaml_path}: model.train_ds.manifests[{i}] ({s.path})"
        if s.type not in SOURCE_TYPES:
            raise UserError(f"{where}: type {s.type!r} is not one of {', '.join(SOURCE_TYPES)}")
        if s.type == "nemo_tarred" and not s.tarred_audio_filepaths:
            raise UserError(f"{where}: type nemo_tarred needs tarred_audio_filepaths (the tars, e.g. audio__OP_0..7_CL_.tar)")
        if s.type != "nemo_tarred" and s.tarred_audio_filepaths:
            raise UserError(f"{where}: tarred_audio_filepaths is only for type nemo_tarred; add type: nemo_tarred")
    if sharded_sources(cfg) and int(cfg.trainer.get("max_steps", -1)) <= 0:
        raise UserError(f"{yaml_path}: sharded training sources (nemo_tarred, lhotse_shar) are an endless stream; "
                        "set trainer.max_steps")
    w = cfg.model.adaptation.average_with_pretrained
    if not 0.0 <= w < 1.0:
        raise UserError(f"{yaml_path}: model.adaptation.average_with_pretrained={w} must be in [0, 1); 0 turns it off")
    if w > 0 and int(cfg.trainer.get("max_steps", -1)) <= 0:
        raise UserError(f"{yaml_path}: model.adaptation.average_with_pretrained happens at trainer.max_steps; set it")
    if cfg.model.decoder_cuda_graphs not in DECODER_CUDA_GRAPHS:
        raise UserError(f"{yaml_path}: model.decoder_cuda_graphs={cfg.model.decoder_cuda_graphs!r}; expected one of "
                        f"{', '.join(DECODER_CUDA_GRAPHS)}")
    a = cfg.model.adaptation
    if a.distill_on not in DISTILL_TARGETS:
        raise UserError(f"{yaml_path}: model.adaptation.distill_on={a.distill_on!r}; expected "
                        f"{', '.join(DISTILL_TARGETS[:-1])} or {DISTILL_TARGETS[-1]}")
    for key in ("distill_weight", "anchor_weight", "adapter_dim", "adapter_l2"):
        if a[key] < 0:
            raise UserError(f"{yaml_path}: model.adaptation.{key}={a[key]} must be >= 0; 0 turns it off")
    if not 0.0 <= a.adapter_dropout < 1.0:
        raise UserError(f"{yaml_path}: model.adaptation.adapter_dropout={a.adapter_dropout} must be in [0, 1)")
    weights = [float(m.weight) for m in cfg.model.train_ds.manifests]
    if weights and (min(weights) < 0 or max(weights) == 0):
        raise UserError(f"{yaml_path}: model.train_ds.manifests weights {weights}: each must be >= 0 (0 = listed, not "
                        "trained on) and one at least > 0")
    if a.gate_by_language and a.router_utterances < 1:
        raise UserError(f"{yaml_path}: model.adaptation.router_utterances={a.router_utterances} must be >= 1")
    if a.anchor_fisher and a.fisher_utterances < 1:
        raise UserError(f"{yaml_path}: model.adaptation.fisher_utterances={a.fisher_utterances} must be >= 1")
    if cfg.init_from_pretrained_model and cfg.init_from_nemo_model:
        raise UserError(f"{yaml_path}: both init_from_pretrained_model and init_from_nemo_model are set; set one of them")
    if cfg.init_from_nemo_model and not Path(cfg.init_from_nemo_model).is_file():
        raise UserError(f"{cfg.init_from_nemo_model}: init_from_nemo_model not found; give the path of a .nemo file")
