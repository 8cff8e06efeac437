"""The attention functions registered as ``hf_posenc_sdpa`` and ``hf_posenc_eager``.

transformers' attention modules look their attention function up by the name in their
config. A patched model's config names one of these; each applies the layer's in-attention
encoding and then calls transformers' own sdpa or the model file's own eager function, so
masks, GQA, dropout and ``output_attentions`` behave as usual.

Paths for score biases (``controller.attention_path``):

* ``fused`` (causal ALiBi): the bias rides in two extra q/k dimensions, no bias tensor at all,
  so SDPA keeps its fused causal kernel. Within a row, -m (i - j) equals m (j - r) up to a
  per-row constant that softmax ignores; t = j - r is split as 256 h + l so both parts are
  exact integers even in bf16/fp16 (for |t| < 65536), and the slope goes on the query side.
* ``bias``: the bias is materialised as an additive float mask [1|B, H, Q, K] (built once per
  forward and shared by all layers when it is layer-independent).
* ``chunked``: the same, in query chunks: O(H * chunk * K) memory instead of O(H * Q * K).

``auto`` (default) picks ``fused`` where it applies, else ``chunked`` for causal prefills of more
than 4 chunks (causal chunks skip the keys after their last query: half the attention work) or
biases over ``chunk_threshold`` elements, else ``bias``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import compat
from .encodings.base import apply_rotary
from .patching import LINK_ATTR


def merge_bias(mask, bias, is_causal, q_pos, k_pos, dtype):
    """One additive float mask from a transformers mask and a score bias [1, H, Q, K] (fp32).

    mask: None (causal or full attention implied), bool [B, 1, Q, K] (True = keep) or float
    (0 / large negative). Maths in fp32, one cast at the end; masked entries get dtype's min.
    """
    neg = torch.finfo(dtype).min
    if mask is None:
        if is_causal:
            keep = k_pos[None, :] <= q_pos[:, None]
            bias = bias.masked_fill(~keep, neg)
    elif mask.dtype == torch.bool:
        bias = torch.where(mask, bias, neg)
    else:
        bias = (mask.float() + bias).clamp(min=neg)
    return bias.to(dtype)


def _positions(controller, q_len, k_len, device):
    q_pos = torch.arange(q_len, device=device) + controller.query_start(q_len, k_len)
    return q_pos, torch.arange(k_len, device=device)


def _memo(controller, key, build):
    """Per-forward memo for layer-independent tensors (inference only: a checkpointed layer
    must recompute exactly what it computed, and compiled graphs must not mutate dicts)."""
    if torch.is_grad_enabled() or compat.is_compiling():
        return build()
    memo = controller._memo
    if key not in memo:
        memo[key] = build()
    return memo[key]


def _rotate(controller, query, key, q_pos, k_pos):
    enc = controller.encoding
    if hasattr(enc, "rotate"):  # encodings that transform q and k differently (e.g. xPos decay)
        return enc.rotate(query, key, q_pos, k_pos)
    # Within one forward every layer has the same positions: memo keys need only the lengths.
    cq, sq = _memo(controller, ("rot_q", q_pos.shape[0], k_pos.shape[0], query.dtype),
                   lambda: enc.cos_sin(q_pos, query.dtype))
    ck, sk = _memo(controller, ("rot_k", k_pos.shape[0], key.dtype), lambda: enc.cos_sin(k_pos, key.dtype))
    return apply_rotary(query, cq, sq), apply_rotary(key, ck, sk)


def _fused_alibi(controller, module, query, key, value, mask, q_pos, k_pos, fn, kwargs):
    """Causal ALiBi as two extra q/k dimensions (see the module docstring)."""
    scaling = kwargs.get("scaling")
    if scaling is None:  # the head dimension grows by 2: keep the original default scale
        scaling = query.shape[-1] ** -0.5
    kwargs = {**kwargs, "scaling": scaling}
    slopes = controller.encoding.slopes(query.device)  # fp32 [H]
    t = k_pos - q_pos[-1]  # <= 0 up to the last query; later static-cache slots are masked
    lo, hi = torch.remainder(t, 256), torch.div(t, 256, rounding_mode="floor")
    k_extra = torch.stack((lo, hi), dim=-1).to(key.dtype)  # [K, 2] exact integers
    q_extra = (torch.stack((slopes, 256 * slopes), dim=-1) / scaling).to(query.dtype)  # [H, 2]
    b, h, q_len, d = query.shape
    query = torch.cat((query, q_extra[None, :, None, :].expand(b, h, q_len, 2)), dim=-1)
    key = torch.cat((key, k_extra.expand(*key.shape[:2], -1, 2)), dim=-1)
    value = F.pad(value, (0, 2))
    out, weights = fn(module, query, key, value, mask, **kwargs)
    return out[..., :d].contiguous(), weights


def _bias(enc, q_pos, k_pos, layer_idx, query, key, extra):
    """[1|B, H, Q, K] fp32; content-dependent encodings (``needs_qk``) also see q [B,H,Q,D], k [B,Hkv,K,D]
    and the attention scaling; ``needs_positions`` ones the true query positions [B|1, Q]."""
    kw = {}
    if getattr(enc, "needs_qk", False):
        kw.update(query=query, key=key, scaling=extra["scaling"])
    if getattr(enc, "needs_positions", False):
        kw["positions"] = extra["positions"]
    return enc.bias(q_pos, k_pos, layer_idx, **kw)


def _extra(controller, module, query, q_pos, kwargs) -> dict:
    """What content/position-dependent biases need beyond q_pos/k_pos (see ``_bias``)."""
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
    positions = controller.query_positions
    if positions is None or positions.shape[-1] != q_pos.shape[0]:  # no pre-hook ran: raw indices
        positions = q_pos[None]
    return {"scaling": float(scaling), "positions": positions}


def _bias_mask(controller, layer_idx, mask, is_causal, q_pos, k_pos, query, key, extra):
    enc, dtype = controller.encoding, query.dtype
    build = lambda: merge_bias(mask, _bias(enc, q_pos, k_pos, layer_idx, query, key, extra),  # noqa: E731
                               is_causal, q_pos, k_pos, dtype)
    if not enc.layer_independent() or getattr(enc, "needs_qk", False):
        return build()
    return _memo(controller, ("bias", id(mask), q_pos.shape[0], k_pos.shape[0], dtype), build)


class _DistanceBias:
    """One [H, N] bias vector over every distance ``k - q`` of a call (``lo`` the first), from
    which chunks of the [1, H, rows, keys] bias are copied: ``self(a, b, k_end, k_beg=0)`` gives
    query rows a..b-1 against keys k_beg..k_end-1, in the vector's dtype, as a fresh tensor."""

    def __init__(self, vec: torch.Tensor, lo: int, q_pos: torch.Tensor):
        self.vec, self.lo, self.q_pos, self.last = vec, lo, q_pos, int(q_pos[-1])

    def __call__(self, a: int, b: int, k_end: int, k_beg: int = 0) -> torch.Tensor:
        # Row i needs vec[j - q_i - lo] for k_beg <= j < k_end: a window starting at k_beg + last - q_i,
        # which decreases with i, so take the windows of rows b-1..a and flip them into order (one copy).
        first_window = k_beg + self.last - int(self.q_pos[b - 1])
        rows = self.vec.unfold(1, k_end - k_beg, 1)[:, first_window:k_beg + self.last - int(self.q_pos[a]) + 1]
        return rows.flip(1)[None]


def _distance_bias(controller, layer_idx, q_pos, k_pos, dtype) -> _DistanceBias | None:
    """The ``_DistanceBias`` of this call for encodings with ``bias_by_distance`` (its vector built
    once per forward when layer-independent), or None."""
    enc = controller.encoding
    if not hasattr(enc, "bias_by_distance") or getattr(enc, "needs_qk", False) \
            or getattr(enc, "needs_positions", False):
        return None
    lo, hi = -int(q_pos[-1]), k_pos.shape[0] - 1 - int(q_pos[0])  # k_pos = 0..K-1: distances k - q span lo..hi
    build = lambda: enc.bias_by_distance(  # noqa: E731
        torch.arange(lo, hi + 1, device=q_pos.device), layer_idx).to(dtype)
    vec = _memo(controller, ("dist", lo, hi, dtype, layer_idx if not enc.layer_independent() else None), build)
    return _DistanceBias(vec, lo, q_pos)


def _saturation(by_distance) -> int | None:
    """The distance D beyond which a causal distance bias is constant (T5's last bucket), read off
    the bias vector of this call: keys with q - k >= D all get the same bias. None if no plateau."""
    vec, lo = by_distance.vec, by_distance.lo
    causal = vec[:, :1 - lo]  # distances lo..0
    same = (causal == causal[:, :1]).all(dim=0)
    n = int(same.int().cumprod(0).sum())  # leading distances equal to the farthest one
    return -(lo + n - 1) if n > 1 else None


def _plateau_chunks(module, query, key, value, q_pos, by_distance, dist, chunk, scaling):
    """Causal attention with a distance bias that is constant beyond ``dist`` (no mask, CPU):
    per query chunk, the keys at least ``dist`` before every query see the constant, which
    softmax ignores, so they go through the fused kernel without any bias; the band of nearer
    keys gets (bias - constant) and the causal mask; the two parts are merged by log-sum-exp.
    Builds O(H * chunk * (chunk + dist)) biases instead of O(H * chunk * K)."""
    n_rep = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    value = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    const = by_distance.vec[:, :1]  # [H, 1]: the plateau value
    outs = []
    for a in range(0, query.shape[-2], chunk):
        b = min(query.shape[-2], a + chunk)
        first, last = int(q_pos[a]), int(q_pos[b - 1])
        n_far = max(0, first - dist + 1)  # keys 0..first-dist are >= dist before every query of the chunk
        q = query[:, :, a:b]
        band = by_distance(a, b, last + 1, n_far) - const[None, :, None]
        later = torch.arange(n_far, last + 1, device=q.device)[None, :] > q_pos[a:b, None]
        band.masked_fill_(later, float("-inf"))
        o_near, l_near = compat.attention_with_lse(q, key[:, :, n_far:last + 1], value[:, :, n_far:last + 1], band,
                                                   scaling)
        if n_far == 0:
            outs.append(o_near)
            continue
        o_far, l_far = compat.attention_with_lse(q, key[:, :, :n_far], value[:, :, :n_far], None, scaling)
        total = torch.logaddexp(l_far, l_near)
        out = o_far.float() * (l_far - total).exp()[..., None] + o_near.float() * (l_near - total).exp()[..., None]
        outs.append(out.to(query.dtype))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def _chunked(controller, module, layer_idx, query, key, value, mask, is_causal, q_pos, k_pos, fn, kwargs, extra):
    """Score-bias attention in query chunks: [B, H, chunk, K'] biases at a time. Causal chunks stop
    at their last query's key (K' <= K), which also halves the attention work of a long prefill."""
    chunk = controller.chunk_size or (controller.causal_chunk if is_causal else
                                      max(1, controller.chunk_threshold // (query.shape[1] * key.shape[-2])))
    by_distance = _distance_bias(controller, layer_idx, q_pos, k_pos, query.dtype)
    k_len = key.shape[-2]
    if by_distance is not None and is_causal and mask is None and fn is compat.native_sdpa() \
            and not (module.training and kwargs.get("dropout", 0.0) > 0) and compat.has_attention_with_lse(query):
        dist = _saturation(by_distance)
        if dist is not None:
            scaling = kwargs.get("scaling")
            scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
            return _plateau_chunks(module, query, key, value, q_pos, by_distance, dist, chunk, scaling)
    outs, weights = [], []
    for a in range(0, query.shape[-2], chunk):
        b = min(query.shape[-2], a + chunk)
        k_end = min(k_len, int(q_pos[b - 1]) + 1) if is_causal else k_len
        if by_distance is not None and mask is None:
            # Cheapest build: one copy, and the causal mask only touches the diagonal block.
            sub = by_distance(a, b, k_end)
            if is_causal:
                first = int(q_pos[a]) + 1
                later = k_pos[None, first:k_end] > q_pos[a:b, None]
                sub[..., first:].masked_fill_(later, torch.finfo(sub.dtype).min)
        else:
            sub_mask = mask[..., a:b, :k_end] if mask is not None else None
            if by_distance is not None:
                bias = by_distance(a, b, k_end).float()
            else:
                sub_extra = {**extra, "positions": extra["positions"][:, a:b]}
                bias = _bias(controller.encoding, q_pos[a:b], k_pos[:k_end], layer_idx, query[:, :, a:b],
                             key[:, :, :k_end], sub_extra)
            sub = merge_bias(sub_mask, bias, is_causal, q_pos[a:b], k_pos[:k_end], query.dtype)
        out, w = fn(module, query[:, :, a:b], key[:, :, :k_end], value[:, :, :k_end], sub, **kwargs)
        outs.append(out)
        weights.append(F.pad(w, (0, k_len - k_end)) if w is not None else None)
    return torch.cat(outs, dim=1), (torch.cat(weights, dim=2) if weights[0] is not None else None)


def _rotate_chunks(controller, module, query, key, value, mask, is_causal, q_pos, k_pos, fn, kwargs, chunk):
    """An asymmetric rotary encoding (``rotate``) applied per query chunk, so that encodings which
    scale q and k relative to a reference query (xPos) keep bounded magnitudes in long prefills."""
    enc, outs, weights = controller.encoding, [], []
    for a in range(0, query.shape[-2], chunk):
        b = min(query.shape[-2], a + chunk)
        q, k = enc.rotate(query[:, :, a:b], key, q_pos[a:b], k_pos)
        if mask is not None:
            sub = mask[..., a:b, :]
        elif is_causal:  # a float mask: the rows no longer start at the diagonal
            sub = merge_bias(None, q.new_zeros((1, 1, b - a, k_pos.shape[0]), dtype=torch.float32), True,
                             q_pos[a:b], k_pos, q.dtype)
        else:
            sub = None
        out, w = fn(module, q, k, value, sub, **kwargs)
        outs.append(out)
        weights.append(w)
    return torch.cat(outs, dim=1), (torch.cat(weights, dim=2) if weights[0] is not None else None)


def attend(controller, module, layer_idx, query, key, value, mask, is_causal, fn, **kwargs):
    """query [B, H, Q, D], key/value [B, Hkv, K, D] -> ([B, Q, H, D], probs | None)."""
    q_pos, k_pos = _positions(controller, query.shape[-2], key.shape[-2], query.device)
    enc = controller.encoding
    if controller.rotate_in_attention:
        chunk = getattr(enc, "rotate_chunk", None)
        if chunk and query.shape[-2] > chunk and enc.kind != "bias":
            return _rotate_chunks(controller, module, query, key, value, mask, is_causal, q_pos, k_pos, fn,
                                  kwargs, chunk)
        query, key = _rotate(controller, query, key, q_pos, k_pos)
    if enc.kind != "bias":
        return fn(module, query, key, value, mask, **kwargs)
    path = controller.attention_path
    if path in ("auto", "fused") and getattr(enc, "supports_fused", False) and is_causal and query.shape[-2] > 1:
        return _fused_alibi(controller, module, query, key, value, mask, q_pos, k_pos, fn, kwargs)
    if path == "fused":
        raise ValueError(f"the fused path needs causal ALiBi; use 'auto', 'bias' or 'chunked' for {enc.name!r}")
    size = query.shape[1] * query.shape[-2] * key.shape[-2]
    extra = _extra(controller, module, query, q_pos, kwargs)
    long_causal = is_causal and query.shape[-2] > 4 * controller.causal_chunk
    if path == "chunked" or (path == "auto" and (size > controller.chunk_threshold or long_causal)):
        return _chunked(controller, module, layer_idx, query, key, value, mask, is_causal, q_pos, k_pos, fn, kwargs,
                        extra)
    mask = _bias_mask(controller, layer_idx, mask, is_causal, q_pos, k_pos, query, key, extra)
    return fn(module, query, key, value, mask, **kwargs)


def _make(native: str):
    def posenc_attention(module, query, key, value, attention_mask, **kwargs):
        fn = compat.native_sdpa() if native == "sdpa" else compat.native_eager(module)
        link = module.__dict__.get(LINK_ATTR)
        if link is None:
            return fn(module, query, key, value, attention_mask, **kwargs)
        controller, layer_idx = link
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        if controller.custom_attention is not None:
            return controller.custom_attention(controller, module, layer_idx, query, key, value,
                                               attention_mask, is_causal, fn, **kwargs)
        return attend(controller, module, layer_idx, query, key, value, attention_mask, is_causal, fn, **kwargs)

    posenc_attention.__name__ = f"posenc_{native}_attention"
    return posenc_attention


compat.register_attention_functions(_make)
