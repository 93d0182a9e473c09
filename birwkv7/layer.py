"""Bidirectional RWKV-7 time mix: a drop-in, linear-memory replacement for a Conformer's self-attention.

Torch alone (no NeMo import here): :mod:`birwkv7.nemo_encoder` is where it plugs into NeMo.

One layer follows the RWKV-7 ("Goose", BlinkDL's x070) time mix: token shift with six lerp coefficients,
data-dependent log-log decay ``w = -softplus(-(w0 + tanh(x_w W1) W2)) - 0.5``, in-context learning rate
``a = sigmoid(a0 + x_a A1 A2)``, value residual to the first layer's values, key scaling
``k * (1 + (a - 1) k_a)``, normalized removal key ``kk``, the WKV-7 state update with ``a = -kk`` and
``b = kk * a``, per-head GroupNorm, the ``r . k`` bonus and a LoRA output gate.

Bidirectional design (the choices this module makes, and why):

* **Both directions share every weight.** The backward direction is the same time mix run on each
  sequence reversed within its valid length. Sharing keeps the parameter count equal to one
  unidirectional layer (about the size of the attention it replaces), lets both directions start from
  the same pretrained attention projections, and lets one stacked batch ``(2B, T, C)`` go through every
  projection and a single ``wkv7`` call. The directions still differ: the token shift brings the previous
  frame forward and the *next* frame backward, and the scans see opposite contexts. The only
  direction-specific parameter is the merge gate: per head ``h``,
  ``y = s_h * y_fwd + (1 - s_h) * y_bwd`` with ``s_h = sigmoid(dir_gate_h)``, ``dir_gate`` initialised to 0
  (an even 0.5 / 0.5 mix). The merge happens before the output projection (which is linear, so merging
  after it would give the same result at twice the cost).
* **Reversal within the valid length.** Frame ``t < L_b`` of sequence ``b`` goes to ``L_b - 1 - t``; padded
  frames stay at the end. So in *both* halves of the stacked batch the padding comes after every valid
  frame, and a causal scan cannot carry padding into valid frames.
* **Padding invariance.** Padded inputs are zeroed first, so the token shift (which only ever looks one
  frame back in scan order, i.e. at a valid frame, for every valid frame) never reads padding. At padded
  frames ``k``, ``v`` and ``kk`` are zeroed and the decay is set to 1, so the state after the valid length
  is exactly the state at the last valid frame (nothing downstream uses it, but it keeps the final state
  meaningful and avoids garbage arithmetic). Outputs at padded frames are zeroed.
* **Value residual across layers.** Layer 0 returns its values (stacked layout, backward half reversed)
  as ``v_first``; later layers mix towards them. :meth:`BiRWKV7TimeMix.mix` takes and returns
  ``v_first`` explicitly. Inside NeMo the layer is called as ``self_attn(query=x, key=x, value=x, mask=...,
  pos_emb=..., cache=...)``, with no slot for it, so each layer holds a reference to one shared
  :class:`BiRWKV7Context` that the encoder resets at every forward (it also carries the padding mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from birwkv7.ops import wkv7

# Log-log decay given to padded frames: exp(-exp(-20)) rounds to exactly 1.0 in fp32, so the state passes
# through untouched. Finite on purpose: -inf would risk 0 * inf = nan in a backend's backward pass.
PAD_LOG_LOG_DECAY = -20.0


@dataclass
class BiRWKV7Context:
    """State one encoder forward shares between its time-mix layers.

    ``pad_mask``: (B, T) bool, True at padded frames (NeMo's convention), or None for "all valid".
    ``v_first``: the first layer's values in the direction-stacked layout (2B, T, C), set by layer 0.
    """

    pad_mask: torch.Tensor | None = None
    v_first: torch.Tensor | None = None

    def reset(self) -> None:
        # Dropping both references at the end of a forward frees the autograd graph they would pin.
        self.pad_mask = None
        self.v_first = None


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` frames of each ``x[b]`` along dim 1; frames past the length stay put.

    Its own inverse. ``x``: (B, T, ...), ``lengths``: (B,) integer.
    """
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device)
    length = lengths.to(device=x.device, dtype=torch.long).view(B, 1)
    idx = torch.where(t < length, length - 1 - t, t)  # (B, T)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def lengths_from_pad_mask(pad_mask: torch.Tensor) -> torch.Tensor:
    """Valid lengths from a (B, T) True-at-padding mask. Assumes padding is a suffix (NeMo's layout)."""
    return (~pad_mask).sum(dim=1)


def _lora_dim(d_model: int, factor: float) -> int:
    # The RWKV-7 reference sizes its LoRAs as max(32, round(factor * sqrt(C) / 32) * 32); capped at C so a
    # tiny test model does not get LoRAs wider than itself.
    return min(d_model, max(32, int(round(factor * math.sqrt(d_model) / 32)) * 32))


def _orthogonal_(t: torch.Tensor, scale: float) -> torch.Tensor:
    rows, cols = t.shape
    gain = math.sqrt(rows / cols) if rows > cols else 1.0
    return nn.init.orthogonal_(t, gain=gain * scale)


def _wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    y, _ = wkv7(r, w, k, v, a, b, backend=backend)
    return y


class BiRWKV7TimeMix(nn.Module):
    """Bidirectional RWKV-7 time mix over (B, T, C) with a per-head learned merge of the two directions.

    ``d_model`` must be a multiple of ``head_size``. ``layer_id`` / ``n_layers`` shape the reference
    initialisation and decide which layer produces ``v_first`` (layer 0). ``bias`` adds biases to the
    receptance/key/value/output projections, so a converted model can keep the attention's biases.
    ``backend`` is passed to ``birwkv7.wkv7``.
    """

    def __init__(
        self,
        d_model: int,
        head_size: int = 64,
        layer_id: int = 0,
        n_layers: int = 1,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if head_size <= 0 or d_model % head_size:
            raise ValueError(f"d_model={d_model} must be a positive multiple of head_size={head_size}")
        if not 0 <= layer_id < max(n_layers, 1):
            raise ValueError(f"layer_id={layer_id} out of range for n_layers={n_layers}")
        C = d_model
        self.d_model = d_model
        self.head_size = N = head_size
        self.n_heads = H = d_model // head_size
        self.layer_id = layer_id
        self.n_layers = n_layers
        self.backend = backend
        # Set by the NeMo encoder (shared by all its layers); None when used standalone.
        self.context: BiRWKV7Context | None = None

        # Reference initialisation (RWKV-7 x070): deeper layers mix less of the shifted frame and decay
        # slower; channels within a head get a zigzag spread of decay / in-context rates.
        ratio_0_to_1 = layer_id / max(n_layers - 1, 1)
        ratio_1_to_almost0 = 1.0 - layer_id / max(n_layers, 1)
        ddd = torch.arange(C, dtype=torch.float32) / C
        n = torch.arange(C, dtype=torch.float32)
        linear = n / max(C - 1, 1) - 0.5
        zigzag = ((n % N) - (N - 1) / 2) / max((N - 1) / 2, 1e-9)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / max(C - 1, 1)) ** (1 + ratio_0_to_1**0.3)

        def lerp_init(power: float) -> nn.Parameter:
            return nn.Parameter(1.0 - torch.pow(ddd, power * ratio_1_to_almost0))

        self.x_r = lerp_init(0.2)
        self.x_w = lerp_init(0.9)
        self.x_k = lerp_init(0.7)
        self.x_v = lerp_init(0.7)
        self.x_a = lerp_init(0.9)
        self.x_g = lerp_init(0.2)

        d_w, d_a, d_v, d_g = (_lora_dim(C, f) for f in (2.5, 2.5, 1.7, 5.0))
        self.w0 = nn.Parameter(www + 0.5 + zigzag * 2.5)
        self.w1 = nn.Parameter(torch.zeros(C, d_w))
        self.w2 = nn.Parameter(_orthogonal_(torch.empty(d_w, C), 0.1))
        self.a0 = nn.Parameter(-0.19 + zigzag * 0.3 + linear * 0.4)
        self.a1 = nn.Parameter(torch.zeros(C, d_a))
        self.a2 = nn.Parameter(_orthogonal_(torch.empty(d_a, C), 0.1))
        # Value residual towards layer 0's values; layer 0 has none (an unused parameter breaks DDP).
        if layer_id > 0:
            self.v0 = nn.Parameter(0.73 - linear * 0.4)
            self.v1 = nn.Parameter(torch.zeros(C, d_v))
            self.v2 = nn.Parameter(_orthogonal_(torch.empty(d_v, C), 0.1))
        self.g1 = nn.Parameter(torch.zeros(C, d_g))
        self.g2 = nn.Parameter(_orthogonal_(torch.empty(d_g, C), 0.1))
        self.k_k = nn.Parameter(0.71 - linear * 0.1)
        self.k_a = nn.Parameter(torch.full((C,), 1.02))
        self.r_k = nn.Parameter(torch.full((H, N), -0.04))
        # Per-head merge of the two directions: sigmoid(0) = 0.5 each.
        self.dir_gate = nn.Parameter(torch.zeros(H))

        self.receptance = nn.Linear(C, C, bias=bias)
        self.key = nn.Linear(C, C, bias=bias)
        self.value = nn.Linear(C, C, bias=bias)
        self.output = nn.Linear(C, C, bias=bias)
        # eps = 1e-5 * head_size_divisor**2 with the reference's divisor 8.
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        with torch.no_grad():
            bound = C**-0.5
            self.receptance.weight.uniform_(-0.5 * bound, 0.5 * bound)
            self.key.weight.uniform_(-0.05 * bound, 0.05 * bound)
            self.value.weight.uniform_(-0.5 * bound, 0.5 * bound)
            # A zero output projection makes a freshly initialised layer an identity in the residual stream.
            self.output.weight.zero_()
            for lin in (self.receptance, self.key, self.value, self.output):
                if lin.bias is not None:
                    lin.bias.zero_()

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, heads={self.n_heads}x{self.head_size}, layer_id={self.layer_id}, bidirectional"

    @torch.no_grad()
    def load_attention_weights(
        self, query: nn.Linear, key: nn.Linear, value: nn.Linear, output: nn.Linear
    ) -> list[str]:
        """Initialise receptance/key/value/output from an attention's query/key/value/output projections.

        Copies each weight (and bias, where both sides have one) whose shape matches; returns the names
        copied. Everything else keeps its RWKV-7 initialisation.
        """
        copied: list[str] = []
        for name, dst, src in (
            ("receptance", self.receptance, query),
            ("key", self.key, key),
            ("value", self.value, value),
            ("output", self.output, output),
        ):
            if dst.weight.shape == src.weight.shape:
                dst.weight.copy_(src.weight)
                copied.append(f"{name}.weight")
            if (
                dst.bias is not None
                and getattr(src, "bias", None) is not None
                and dst.bias.shape == src.bias.shape
            ):
                dst.bias.copy_(src.bias)
                copied.append(f"{name}.bias")
        return copied

    def mix(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        v_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The bidirectional time mix. ``x``: (B, T, C); ``pad_mask``: (B, T) True at padded frames.

        ``v_first``: the first layer's values (2B, T, C) as returned by layer 0; ignored by layer 0 and
        treated as "no residual" when None. Returns ``(out (B, T, C), v_first)``.
        """
        B, T, C = x.shape
        H, N = self.n_heads, self.head_size
        if pad_mask is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        else:
            if pad_mask.shape != (B, T):
                raise ValueError(f"pad_mask shape {tuple(pad_mask.shape)} does not match input {(B, T)}")
            valid = ~pad_mask.to(device=x.device, dtype=torch.bool)
        lengths = valid.sum(dim=1)
        keep = valid[..., None]  # (B, T, 1)

        # where, not multiply: a nan/inf in padding must not survive as nan * 0.
        x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        # Both directions as one batch: [forward; backward-reversed-within-length].
        xs = torch.cat([x, reverse_valid(x, lengths)], dim=0)  # (2B, T, C)
        keep2 = torch.cat([keep, keep], dim=0)

        # Token shift: frame t sees frame t-1 in scan order (for the reversed half, the next real frame).
        # Each lerp is built right where it is used and dropped after: at inference nothing keeps these
        # full-length intermediates alive, which is what lets hours of audio fit in one pass.
        xx = F.pad(xs, (0, 0, 1, -1)) - xs
        r = self.receptance(xs + xx * self.x_r)
        w = -F.softplus(-(self.w0 + torch.tanh((xs + xx * self.x_w) @ self.w1) @ self.w2)) - 0.5  # log-log decay < -0.5
        k = self.key(xs + xx * self.x_k)
        xv = xs + xx * self.x_v
        v = self.value(xv)
        if self.layer_id == 0 or v_first is None:
            v_first = v
        else:
            if v_first.shape != v.shape:
                raise ValueError(f"v_first shape {tuple(v_first.shape)} does not match {tuple(v.shape)}")
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        del xv
        a = torch.sigmoid(self.a0 + ((xs + xx * self.x_a) @ self.a1) @ self.a2)  # in-context learning rate
        g = torch.sigmoid((xs + xx * self.x_g) @ self.g1) @ self.g2
        del xs, xx

        kk = F.normalize((k * self.k_k).view(2 * B, T, H, N), dim=-1, p=2.0).view(2 * B, T, C)
        k = k * (1 + (a - 1) * self.k_a)

        # Padded frames leave the state alone: no write (k, v), no removal (kk), decay exactly 1.
        zero = torch.zeros((), dtype=k.dtype, device=k.device)
        k = torch.where(keep2, k, zero)
        v = torch.where(keep2, v, zero)
        kk = torch.where(keep2, kk, zero)
        w = torch.where(keep2, w, torch.full((), PAD_LOG_LOG_DECAY, dtype=w.dtype, device=w.device))

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(2 * B, T, H, N)

        kk_a = kk * a
        del a
        kk = -kk
        y = _wkv7(heads(r), heads(w), heads(k), heads(v), heads(kk), heads(kk_a), self.backend)
        del w, kk, kk_a
        y = self.ln_x(y.reshape(2 * B * T, C)).view(2 * B, T, C)
        y = y + ((heads(r) * heads(k) * self.r_k).sum(dim=-1, keepdim=True) * heads(v)).view(2 * B, T, C)
        del r, k, v
        y = y * g
        del g

        # Undo the reversal and merge the directions per head.
        y_fwd = y[:B].view(B, T, H, N)
        y_bwd = reverse_valid(y[B:], lengths).view(B, T, H, N)
        s = torch.sigmoid(self.dir_gate).view(1, 1, H, 1)
        y = (s * y_fwd + (1 - s) * y_bwd).view(B, T, C)
        out = self.output(y)
        out = torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out, v_first

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        pos_emb: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """NeMo's self-attention call signature; ``key``/``value`` (always ``query``) and ``pos_emb`` are unused.

        The padding mask comes from, in order: ``pad_mask``, the shared context, the diagonal of NeMo's
        (B, T, T) ``mask`` (True = blocked; a frame's own entry is blocked exactly when it is padding).
        """
        if cache is not None:
            raise NotImplementedError(
                "BiRWKV7TimeMix is bidirectional: cache-aware streaming is not supported"
            )
        ctx = self.context
        if pad_mask is None and ctx is not None:
            pad_mask = ctx.pad_mask
        if pad_mask is None and mask is not None:
            pad_mask = mask.diagonal(dim1=-2, dim2=-1)
        v_first = ctx.v_first if ctx is not None else None
        out, v_first = self.mix(query, pad_mask=pad_mask, v_first=v_first)
        if ctx is not None:
            ctx.v_first = v_first
        return out
