"""Keeping the old language while the new one is learned: distillation from the model as fine-tuning starts, and
a penalty that pulls the pretrained weights back toward their starting values (L2, or EWC's Fisher-weighted L2).

Both act only on what the pretrained model knew. The "old language" needs no tag in the data: an utterance whose
tokens are all old ids (`vocab_transplant.old_vocab_size`) is one the pretrained model could have written, so its
posteriors are a meaningful target; every other utterance (the new language, code-switched text) is left alone.

- `Distillation` (learning without forgetting): on the old-language utterances of each batch, adds
  `weight` x KL(teacher || model) to the training loss. The teacher is a frozen copy of the model as fine-tuning
  starts (taken before any checkpoint is restored, so a resumed run has the same teacher). Its output over the old
  tokens and blank, renormalized, is exactly the pretrained model's (the transplant copies every old row and only
  adds new ones), and the student is scored with its full softmax, so probability it moves to new tokens on
  English audio is penalized too. `on` chooses what is matched, cheapest last:
    joint   - the TDT joint at every (frame, label) node: token+blank distribution and duration distribution.
              Constrains encoder, prediction network and joint (where English is lost: bench reset diagnostic).
              Read from the training step's own joint outputs; costs a teacher encoder + prediction network + joint
              on those utterances.
    ctc     - the CTC head's per-frame distribution: constrains the encoder through the CTC head only.
    encoder - mean squared difference of encoder outputs, relative to the teacher's mean square.
  The teacher sees exactly the student's encoder input (after spec-augment), so both answer the same question.
- `Anchor`: the pull of `weight` x sum_i F_i (theta_i - theta0_i)^2 toward the weights fine-tuning started from,
  decoupled from the optimizer as AdamW decouples weight decay: after each optimizer step every pretrained weight
  that step updated moves back by the fraction min(1, lr x `weight` x F_i) of its distance from the start (lr:
  its group's rate at that step; new token rows excluded, their start is a construction, not knowledge). Added to
  the loss instead, the penalty's gradient passes through Adam's normalization and the gradient clip, which turn
  it into a jitter of about lr around the start on every weight; measured on the demo (one seed, 100 steps) that
  made English worse, not better (WER 0.26 against the recipe's 0.15 at weight 100). F = 1 is plain L2; with
  `fisher` it is EWC's diagonal Fisher: the mean squared gradient of the model's own loss on up to
  `fisher_utterances` old-language utterances of the plain training manifests (eval mode, batches of 8),
  normalized to mean 1 over the anchored weights so `weight` means the same in both. The Fisher is computed once,
  by rank 0, from the weights before training, and written to `<run folder>/fisher.pt`; every rank, and a resumed
  run, reads that file, so DDP ranks and resumed runs use identical values.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import lightning.pytorch as pl
import torch

from enhi.atomic import atomic_file
from enhi.config import DISTILL_TARGETS
from enhi.errors import UserError
from enhi.resilience import length_sync_off, no_length_sync
from enhi.rows import old_language_rows, training_entries_by_language
from enhi.transplant import VocabLayout, tdt_omega_off

FISHER_FILE = "fisher.pt"
FISHER_BATCH = 8


def old_vocab_size(model) -> int:
    """Tokens the pretrained model had (its ids are the first ids of the enlarged vocabulary)."""
    return int(model.cfg.vocab_transplant.old_vocab_size)


def _kl_rows(teacher_logits: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the last axis, where the teacher's logits cover a subset of the student's
    classes (already gathered): softmax of the teacher's, against the student's full-softmax log-probabilities."""
    t_logp = teacher_logits.float().log_softmax(-1)
    return (t_logp.exp() * (t_logp - student_logp.float())).sum(-1)


def joint_kl_sum(student: torch.Tensor, teacher: torch.Tensor, layout: VocabLayout, n_old: int,
                 enc_len: torch.Tensor, target_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(teacher || student) of the token+blank distribution plus the KL of the duration distribution, summed
    over the valid (frame, label) nodes, and the number of those nodes.

    `student`: the joint's outputs (B, T, U+1, V+1+D); its token and duration parts are normalized separately
    (TDT), so a log-softmax NeMo applied over the whole vector cancels. `teacher`: logits of the old tokens,
    blank and durations only (B, T', U', n_old+1+D), from `teacher_joint`; it may be longer in T and U than the
    student (NeMo's fused joint cuts each sub-batch to its own longest utterance) and is cut to match."""
    teacher = teacher[:, : student.shape[1], : student.shape[2]].float()
    v = layout.vocab_size
    # KL = sum_k p_k (log p_k - s_k + lse(s)) over the kept columns k, with sum_k p_k = 1: the teacher's
    # negative entropy, minus the p-weighted student logits, plus the student's logsumexp over all tokens and
    # blank. No student log-softmax is materialized: this runs on every lattice node and dominates the cost.
    with torch.no_grad():
        t_logp = teacher[..., : n_old + 1].log_softmax(-1)
        p = t_logp.exp()
        neg_entropy = (p * t_logp).sum(-1)
    tok = student[..., : v + 1].float()
    dot = (p[..., :n_old] * tok[..., :n_old]).sum(-1) + p[..., n_old] * tok[..., v]
    kl = neg_entropy - dot + tok.logsumexp(-1)
    if layout.num_durations:
        kl = kl + _kl_rows(teacher[..., n_old + 1 :], student[..., v + 1 :].float().log_softmax(-1))
    t = torch.arange(student.shape[1], device=student.device)
    u = torch.arange(student.shape[2], device=student.device)
    mask = (t[None, :, None] < enc_len[:, None, None]) & (u[None, None, :] <= target_len[:, None, None])
    return (kl * mask).sum(), mask.sum()


def teacher_joint(joint, f: torch.Tensor, g: torch.Tensor, layout: VocabLayout, n_old: int) -> torch.Tensor:
    """The joint's logits for the old tokens, blank and durations only (B, T, U, n_old+1+D): NeMo's joint with its
    output layer cut to those rows (the new tokens' rows are a fifth of the layer and the teacher never needs
    them). `f` (B, T, D_enc), `g` (B, U, D_pred)."""
    h = joint.joint_net[:-1](joint.project_encoder(f).unsqueeze(2) + joint.project_prednet(g).unsqueeze(1))
    last = joint.joint_net[-1]
    rows = torch.cat([_old_and_blank(layout, n_old, h.device),
                      torch.arange(layout.blank + 1, last.out_features, device=h.device)])
    return torch.nn.functional.linear(h, last.weight[rows], last.bias[rows])


def ctc_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, layout: VocabLayout, n_old: int,
           enc_len: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames of KL(teacher || student) of the CTC heads' outputs (B, T, V+1), the teacher's
    restricted to old tokens and blank and renormalized."""
    keep = _old_and_blank(layout, n_old, student_logp.device)
    kl = _kl_rows(teacher_logp.index_select(-1, keep), student_logp.float().log_softmax(-1).index_select(-1, keep))
    mask = torch.arange(student_logp.shape[1], device=kl.device)[None, :] < enc_len[:, None]
    return (kl * mask).sum() / mask.sum()


def encoder_mse(student: torch.Tensor, teacher: torch.Tensor, enc_len: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of encoder outputs (B, D, T) over valid frames, divided by the teacher's mean
    square there (so the scale does not depend on the encoder's width or output norm)."""
    mask = (torch.arange(student.shape[2], device=student.device)[None, :] < enc_len[:, None])[:, None, :]
    diff = ((student.float() - teacher.float()) ** 2 * mask).sum()
    return diff / (teacher.float() ** 2 * mask).sum().clamp_min(1e-12)


def _old_and_blank(layout: VocabLayout, n_old: int, device) -> torch.Tensor:
    return torch.cat([torch.arange(n_old, device=device), torch.tensor([layout.blank], device=device)])


class Distillation(pl.Callback):
    """Adds `weight` x the distillation term to each training step's loss (see the module doc)."""

    def __init__(self, model, weight: float, on: str = "joint"):
        if on not in DISTILL_TARGETS:
            raise ValueError(f"distill_on must be one of {DISTILL_TARGETS}, not {on!r}")
        self.weight, self.on = float(weight), on
        self.layout, self.n_old = VocabLayout.of(model), old_vocab_size(model)
        # The teacher: the model's own modules as fine-tuning starts, frozen. Built before training, hence before
        # Lightning restores a checkpoint: a resumed run distils from the same teacher.
        names = ["encoder"] + (["decoder", "joint"] if on == "joint" else ["ctc_decoder"] if on == "ctc" else [])
        self.teacher = torch.nn.ModuleDict({n: copy.deepcopy(getattr(model, n)) for n in names}).eval()
        self.teacher.requires_grad_(False)
        # NeMo's Conformer all-reduces each forward's length across DDP ranks; the teacher runs only on ranks whose
        # batch has English, so it must not take part (its positional table grows locally as needed).
        no_length_sync(self.teacher["encoder"])
        self._seen: dict[str, tuple] = {}
        self._hooks: list = []
        self._original = None
        self._joint_own = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._original = pl_module.training_step
        # NeMo wraps training_step on the instance; that exact object (not a bound copy) is put back in teardown.
        self._own = vars(pl_module).get("training_step")
        pl_module.training_step = self._training_step(pl_module)
        enc = pl_module.encoder
        self._hooks = [
            enc.register_forward_pre_hook(lambda m, a, kw: self._keep("enc_in", kw), with_kwargs=True),
            enc.register_forward_hook(lambda m, a, out: self._keep("enc_out", out)),
        ]
        if self.on == "joint":
            # The training step's own joint outputs (one per fused sub-batch, in batch order) are distilled where
            # they are: no second student joint, and one backward through it for loss and distillation together.
            joint = pl_module.joint
            self._joint_own = vars(joint).get("joint")
            inner = joint.joint

            def joint_and_keep(f, g):
                out = inner(f, g)
                if "active" in self._seen and out.dim() == 4 and out.shape[2] > 1:  # not a decoding step (U = 1)
                    self._seen.setdefault("joint", []).append(out)
                return out

            joint.joint = joint_and_keep

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.on == "joint" and "joint" in vars(pl_module.joint):
            if self._joint_own is not None:
                pl_module.joint.joint = self._joint_own
            else:
                del pl_module.joint.joint
        if self._original is not None:
            if self._own is not None:
                pl_module.training_step = self._own
            else:
                del pl_module.training_step  # the class's method shows through again
            self._original = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.teacher.to(pl_module.device)

    def _keep(self, name: str, value) -> None:
        if "active" in self._seen:  # only inside a training step (validation transcribes with the same modules)
            self._seen[name] = value

    def _training_step(self, pl_module):
        original = self._original

        def step(batch, *args, **kwargs):
            self._seen = {"active": True}
            try:
                out = original(batch, *args, **kwargs)
                term = self.term(pl_module, batch)
            finally:
                self._seen = {}  # drop the captured activations with the step
            if term is not None:
                out["loss"] = out["loss"] + self.weight * term
                pl_module.log("train_distill", term.detach(), on_step=True, on_epoch=False)
            return out

        return step

    def term(self, pl_module, batch) -> torch.Tensor | None:
        """The distillation term of the batch the training step just ran (None if it has no old-language
        utterance)."""
        _, _, transcript, transcript_len = batch
        rows = old_language_rows(transcript, transcript_len, self.n_old)
        if rows.numel() == 0:
            return None
        feats, feat_len = self._seen["enc_in"]["audio_signal"][rows], self._seen["enc_in"]["length"][rows]
        enc_s, enc_len = self._seen["enc_out"][0][rows], self._seen["enc_out"][1][rows]
        with torch.no_grad():
            enc_t, _ = self.teacher["encoder"](audio_signal=feats, length=feat_len)
            if self.on == "joint":
                tgt, tl = transcript[rows], transcript_len[rows]
                dec_t, _, _ = self.teacher["decoder"](targets=tgt, target_length=tl)
                joint_t = teacher_joint(self.teacher["joint"], enc_t.transpose(1, 2), dec_t.transpose(1, 2),
                                        self.layout, self.n_old)
            elif self.on == "ctc":
                ctc_t = self.teacher["ctc_decoder"](encoder_output=enc_t)
        if self.on == "encoder":
            return encoder_mse(enc_s, enc_t, enc_len)
        if self.on == "ctc":
            return ctc_kl(pl_module.ctc_decoder(encoder_output=enc_s), ctc_t, self.layout, self.n_old, enc_len)
        return self._joint_term(self._seen.get("joint", []), rows, joint_t, enc_len, tl, transcript.shape[0])

    def _joint_term(self, outs: list[torch.Tensor], rows: torch.Tensor, joint_t: torch.Tensor,
                    enc_len: torch.Tensor, tl: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-node mean KL over the English rows, read from the step's joint outputs (consecutive sub-batches)."""
        if sum(o.shape[0] for o in outs) != batch:
            raise RuntimeError(f"distillation saw joint outputs for {sum(o.shape[0] for o in outs)} utterances in a "
                               f"batch of {batch}: this NeMo's training step computes the joint in another way")
        total, nodes, begin = 0.0, 0, 0
        for out in outs:
            mine = ((rows >= begin) & (rows < begin + out.shape[0])).nonzero().flatten()  # positions within `rows`
            if mine.numel():
                s, n = joint_kl_sum(out[rows[mine] - begin], joint_t[mine], self.layout, self.n_old,
                                    enc_len[mine], tl[mine])
                total, nodes = total + s, nodes + n
            begin += out.shape[0]
        return total / nodes


class Anchor(pl.Callback):
    """After each optimizer step, pull every pretrained weight back toward its start by the fraction
    min(1, lr x `weight` x F) (see the module doc)."""

    def __init__(self, model, weight: float, fisher: bool, cfg=None, fisher_utterances: int = 128):
        self.weight, self.use_fisher, self.cfg, self.n_fisher = float(weight), bool(fisher), cfg, int(fisher_utterances)
        self.params = dict(model.named_parameters())
        self.mask = _new_row_masks(model)
        # Before training, so before a checkpoint is restored: the same anchor on resume. On the CPU, one copy.
        self.theta0 = {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
        self.fisher: dict[str, torch.Tensor] | None = None
        self._lr: dict[int, float] | None = None
        self.scale: dict[str, torch.Tensor] = {}  # F (or 1) with new rows at 0, on the model's device (on_fit_start)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.use_fisher:
            return
        # Lightning calls setup before it restores a checkpoint: the weights here are still theta0.
        path = Path(trainer.default_root_dir) / FISHER_FILE
        if trainer.is_global_zero and not path.is_file():
            with length_sync_off(pl_module.encoder):  # rank 0 runs these forwards alone; the others wait below
                fisher = diagonal_fisher(pl_module, self.cfg, self.n_fisher)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "wb") as f:
                torch.save(fisher, f)
        trainer.strategy.barrier("fisher")
        self.fisher = torch.load(path, map_location="cpu", weights_only=True)
        if set(self.fisher) != set(self.params):
            raise UserError(f"{path}: its Fisher does not match this model's parameters; delete it to recompute")

    def on_fit_start(self, trainer, pl_module) -> None:
        device = pl_module.device
        self.theta0 = {n: t.to(device) for n, t in self.theta0.items()}
        self.scale = {n: self._weights(n).to(device) for n in self.mask}

    def _weights(self, name: str) -> torch.Tensor:
        """F with the new tokens' rows at 0."""
        return self.mask[name] * self.fisher[name] if self.fisher is not None else self.mask[name]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # The rate each weight is stepped at now (its group's, as the scheduler set it for this step).
        self._lr = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._lr is None:  # gradient accumulation: no optimizer step after this micro-batch
            return
        lr, self._lr = self._lr, None
        self.pull(lr)

    def pull(self, lr: dict[int, float]) -> None:
        """theta <- theta - min(1, lr x weight x F) x (theta - theta0) for every weight the step updated (one
        whose gradient is None was not: a skipped step, an encoder held by EncoderWarmupFreeze)."""
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is None or id(p) not in lr:
                    continue
                frac = (lr[id(p)] * self.weight * self.scale[name]).clamp_(max=1.0)
                p.sub_(frac * (p - self.theta0[name]))


def _new_row_masks(model) -> dict[str, torch.Tensor]:
    """name -> 1 where a weight is anchored, 0 on the new tokens' rows (the first axis of embedding, joint output
    and CTC head, between the old tokens and blank)."""
    from enhi.rows import new_token_rows

    new = {id(p): r for p, r in new_token_rows(model)}
    out = {}
    for name, p in model.named_parameters():
        m = torch.ones_like(p, device="cpu")
        r = new.get(id(p))
        if r is not None:
            m[r] = 0
        out[name] = m
    return out


def fisher_entries(cfg, model, n: int) -> list:
    """Up to `n` old-language utterances of the plain training manifests, in an order fixed by `cfg.seed`."""
    old, _ = training_entries_by_language(cfg, model)
    if not old:
        raise UserError("model.adaptation.anchor_fisher=true needs old-language (English) utterances in a plain "
                        "training manifest (model.train_ds.manifests, type nemo); none was found")
    random.Random(cfg.seed).shuffle(old)
    return old[:n]


def diagonal_fisher(model, cfg, n: int) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the model's training loss (eval mode, TDT branch) over batches of old-language
    utterances, normalized to mean 1 over the anchored weights."""
    from enhi.evaluate import audio_batch, hybrid_loss, load_audio, token_batch

    entries = sorted(fisher_entries(cfg, model, n), key=lambda e: e.duration)
    params = dict(model.named_parameters())
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    batches = [entries[i : i + FISHER_BATCH] for i in range(0, len(entries), FISHER_BATCH)]
    try:
        for chunk in batches:
            model.zero_grad(set_to_none=True)
            sig, lens = audio_batch([load_audio(e.audio_filepath) for e in chunk], model.device)
            tr, tl = token_batch(model, [e.text for e in chunk])
            with tdt_omega_off(model):  # the TDT branch every time: the Fisher must not depend on global `random`
                hybrid_loss(model, sig, lens, tr, tl)["total"].backward()
            for name, p in params.items():
                if p.grad is not None:
                    sums[name] += p.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    masks = _new_row_masks(model)
    fisher = {name: (s / len(batches)).cpu() * masks[name] for name, s in sums.items()}
    mean = sum(float(f.sum()) for f in fisher.values()) / sum(float(m.sum()) for m in masks.values())
    return {name: f / mean for name, f in fisher.items()}
