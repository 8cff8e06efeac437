"""Extensions that compute attention themselves: dynamic NTK and Self-Extend.

Both keep keys *unrotated* in the KV cache and rotate them at attention time, so every
decoding step sees exactly what a full forward would: that is what makes them correct with
the cache (transformers' own dynamic NTK rotates keys before caching, so keys cached before
a rescale keep stale frequencies).

Positions are raw cache indices, like every in-attention encoding here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import compat
from ..attention import _memo
from ..encodings.base import apply_rotary
from ..encodings.rope import pad_inv_freq


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def _chunk_mask(mask, is_causal, q_pos, k_pos, a, b):
    """The [.., b-a, K] slice of the attention mask for query rows a..b (bool or float)."""
    if mask is not None:
        return mask[..., a:b, :]
    if is_causal:
        return (k_pos[None, :] <= q_pos[a:b, None])[None, None]
    return None


def _is_eager(native_fn) -> bool:
    return native_fn is not compat.native_sdpa()


# ---------------------------------------------------------------------- dynamic NTK
def dynamic_inv_freq(controller, length: int, device) -> torch.Tensor:
    """Inverse frequencies of dynamic NTK for sequences of ``length`` tokens (memoised per length)."""
    ext, enc = controller.extension, controller.encoding
    cache = controller.__dict__.setdefault("_dynamic_inv_freq", {})
    if length not in cache:
        if length <= ext["original_max_length"]:
            inv = enc.inv_freq(device)
        else:
            spec, opts = enc.spec, enc.options
            inv, _ = compat.scaled_rope_inv_freq(
                "dynamic", head_dim=spec.head_dim, num_heads=spec.num_heads, theta=opts["theta"],
                partial_rotary_factor=opts["partial_rotary_factor"], max_length=length,
                original_max_length=ext["original_max_length"], params={"factor": ext["factor"]}, seq_len=length)
            inv = pad_inv_freq(inv, spec.rotary_dim)
        cache[length] = inv
    return cache[length].to(device)


def dynamic_ntk_attention(controller, module, layer_idx, query, key, value, mask, is_causal, native_fn, **kwargs):
    """Dynamic NTK with per-query frequencies.

    A query at raw position p uses the NTK base for length ``ell(p) = max(L, ceil((p+1)/g)*g)``
    (transformers' dynamic formula; L the trained length, g the granularity), and the keys it
    attends to are rotated with the same base. Rows up to L are plain RoPE. Because a row's base
    depends only on its own position, incremental decoding equals a full forward.
    query [B, H, Q, D], key/value [B, Hkv, K, D].
    """
    ext = controller.extension
    q_len, k_len = query.shape[-2], key.shape[-2]
    start = controller.query_start(q_len, k_len)
    start = int(start)  # bucket boundaries are Python ints (dynamic is not a compile target)
    device = query.device
    q_pos = torch.arange(q_len, device=device) + start
    k_pos = torch.arange(k_len, device=device)
    enc = controller.encoding
    gran, trained = ext["params"]["granularity"], ext["original_max_length"]
    # A causal prefill without a caller's mask needs no [Q, K] mask at all: a bucket that starts at
    # key 0 is plain causal SDPA, a later bucket is two fused attentions (earlier keys, unmasked, and
    # its own square causal block) merged by log-sum-exp.
    fused = is_causal and mask is None and not _is_eager(native_fn) and compat.has_attention_with_lse(query) \
        and not (module.training and kwargs.get("dropout", 0.0) > 0)
    outs, weights = [], []
    a = 0
    while a < q_len:
        p = start + a
        ell = max(trained, math.ceil((p + 1) / gran) * gran)
        b = min(q_len, ell - start)  # rows sharing this base
        inv = dynamic_inv_freq(controller, ell, device)
        k_end = min(k_len, start + b) if is_causal else k_len  # causal rows see no later keys
        cq, sq = enc.cos_sin(q_pos[a:b], query.dtype, inv_freq=inv)
        ck, sk = enc.cos_sin(k_pos[:k_end], key.dtype, inv_freq=inv)
        q, k, v = apply_rotary(query[:, :, a:b], cq, sq), apply_rotary(key[:, :, :k_end], ck, sk), value[:, :, :k_end]
        if fused and b - a > 1 and p > 0:
            out, w = _after_earlier_keys(q, k, v, p, kwargs.get("scaling")), None
        else:  # from key 0 (fused) the kernel's own causal mask is right
            sub_mask = None if fused and p == 0 else _chunk_mask(mask, is_causal, q_pos, k_pos[:k_end], a, b)
            out, w = native_fn(module, q, k, v, sub_mask[..., :k_end] if sub_mask is not None else None, **kwargs)
        outs.append(out)
        weights.append(nn.functional.pad(w, (0, k_len - k_end)) if w is not None else None)
        a = b
    attn_weights = torch.cat(weights, dim=2) if weights[0] is not None else None
    return torch.cat(outs, dim=1), attn_weights


def _after_earlier_keys(q, k, v, first, scaling):
    """Causal attention of rows at positions first..first+Q-1 over keys 0..first+Q-1 without a
    [Q, K] mask: keys before ``first`` (every row sees them) and the square diagonal block, each
    fused, merged by log-sum-exp. q [B, H, Q, D], k/v [B, Hkv, K, D] -> [B, Q, H, D]."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = _repeat_kv(k, n_rep), _repeat_kv(v, n_rep)
    scaling = scaling if scaling is not None else q.shape[-1] ** -0.5
    q_len = q.shape[-2]
    diagonal = torch.ones(q_len, q_len, dtype=torch.bool, device=q.device).tril_()
    out = _lse_merge([_masked_part(q, k[:, :, :first], v[:, :, :first], None, None, scaling),
                      _masked_part(q, k[:, :, first:], v[:, :, first:], diagonal, None, scaling)])
    return out.to(q.dtype).transpose(1, 2)


# ---------------------------------------------------------------------- Self-Extend
SELF_EXTEND_CHUNK = 512


def self_extend_attention(controller, module, layer_idx, query, key, value, mask, is_causal, native_fn,
                          scaling=None, dropout=0.0, **kwargs):
    """Self-Extend (Jin et al., 2024): grouped attention without training.

    Keys within ``window`` tokens of a query use exact relative positions; farther keys use
    grouped positions ``floor(j / G)`` with queries at ``floor(i / G) + window - floor(window / G)``,
    so the largest relative position stays within the trained range. Computed in query chunks
    of 512 rows. With SDPA on CPU each chunk is two fused attentions (far keys, near band)
    merged by their log-sum-exp; eager, dropout or other devices use explicit scores
    ([B, H, 512, K] at a time). Returns ([B, Q, H, D], probs or None).
    """
    ext = controller.extension["params"]
    window, group = ext["window"], ext["group_size"]
    q_len, k_len = query.shape[-2], key.shape[-2]
    device, dtype = query.device, query.dtype
    q_pos = torch.arange(q_len, device=device) + controller.query_start(q_len, k_len)
    k_pos = torch.arange(k_len, device=device)
    enc = controller.encoding
    n_rep = query.shape[1] // key.shape[1]
    # cos/sin depend only on positions: computed once per forward, shared by every layer.
    memo = lambda key_, fn: _memo(controller, ("self_extend", q_len, k_len, dtype) + key_, fn)  # noqa: E731
    ck, sk = memo(("k",), lambda: enc.cos_sin(k_pos, dtype))
    k_near = _repeat_kv(apply_rotary(key, ck, sk), n_rep)
    ck, sk = memo(("k_far",), lambda: enc.cos_sin(torch.div(k_pos, group, rounding_mode="floor"), dtype))
    k_far = _repeat_kv(apply_rotary(key, ck, sk), n_rep)
    v = _repeat_kv(value, n_rep)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    shift = window - window // group
    fused = not _is_eager(native_fn) and not (module.training and dropout > 0) and compat.has_attention_with_lse(query)
    outs, probs_all = [], []
    for a in range(0, q_len, SELF_EXTEND_CHUNK):
        b = min(q_len, a + SELF_EXTEND_CHUNK)
        qp = q_pos[a:b]
        # Causal rows never see keys past the chunk's last query; exact positions are needed
        # only in the band of `window` keys before each query.
        k_end = min(k_len, int(qp[-1]) + 1) if is_causal else k_len
        k_beg = max(0, int(qp[0]) - window + 1)
        cq, sq = memo(("q_far", a), lambda: enc.cos_sin(torch.div(qp, group, rounding_mode="floor") + shift, dtype))
        q_far = apply_rotary(query[:, :, a:b], cq, sq)
        cq, sq = memo(("q", a), lambda: enc.cos_sin(qp, dtype))
        q_near = apply_rotary(query[:, :, a:b], cq, sq)
        if fused:  # without a caller's mask, causality is part of the fused parts' own masks
            user = mask[..., a:b, :k_end] if mask is not None else None
            out = _self_extend_fused(q_near, q_far, k_near, k_far, v, qp, k_pos, k_beg, k_end, window, user,
                                     scaling, causal=is_causal and mask is None)
            outs.append(out.to(dtype).transpose(1, 2))
            continue
        chunk_mask = _chunk_mask(mask, is_causal, q_pos, k_pos, a, b)
        chunk_mask = chunk_mask[..., :k_end] if chunk_mask is not None else None
        scores = (q_far @ k_far[:, :, :k_end].transpose(-1, -2)).float()
        if k_beg < k_end:
            near = (q_near @ k_near[:, :, k_beg:k_end].transpose(-1, -2)).float()
            in_window = (qp[:, None] - k_pos[None, k_beg:k_end]) < window
            scores[..., k_beg:k_end] = torch.where(in_window, near, scores[..., k_beg:k_end])
        scores = scores * scaling
        if chunk_mask is not None:
            neg = torch.finfo(torch.float32).min
            scores = torch.where(chunk_mask, scores, neg) if chunk_mask.dtype == torch.bool \
                else (scores + chunk_mask.float()).clamp(min=neg)
        probs = scores.softmax(dim=-1).to(dtype)
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        outs.append((probs @ v[:, :, :k_end]).transpose(1, 2))
        if _is_eager(native_fn):
            probs_all.append(nn.functional.pad(probs, (0, k_len - k_end)))
    return torch.cat(outs, dim=1).contiguous(), (torch.cat(probs_all, dim=2) if probs_all else None)


def _masked_part(q, k, v, allowed, user_mask, scaling):
    """Fused attention of q over k/v restricted to ``allowed`` [Q, K] (None: every key) and the
    caller's mask slice (bool or additive, [B|1, 1, Q, K], or None). Returns (out float32
    [B, H, Q, D], lse [B, H, Q]) with lse = -inf on rows that see no key."""
    bias = None
    if allowed is not None:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[None, None]
    if user_mask is not None:
        if user_mask.dtype == torch.bool:
            keep = user_mask
            user_bias = torch.zeros(user_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
        else:
            keep = user_mask > torch.finfo(user_mask.dtype).min / 2
            user_bias = user_mask.to(q.dtype)
        bias = user_bias if bias is None else bias + user_bias
        allowed = keep if allowed is None else allowed & keep
    out, lse = compat.attention_with_lse(q, k, v, bias, scaling)
    if allowed is not None:
        lse = lse.masked_fill((~allowed.any(-1)).expand_as(lse), float("-inf"))
    return out.float(), lse


def _self_extend_fused(q_near, q_far, k_near, k_far, v, qp, k_pos, k_beg, k_end, window, chunk_mask, scaling,
                       causal=False):
    """One query chunk of Self-Extend as fused attentions merged by log-sum-exp: far keys
    (j <= i - window, grouped positions) in a block every row sees whole (no mask at all) and a
    triangle, and the near band (i - j < window, exact positions). Masks are O(chunk * (chunk +
    window)), never O(chunk * K)."""
    first, last = int(qp[0]), int(qp[-1])
    far_end = min(k_end, max(0, last - window + 1))  # keys far for at least one row of the chunk
    n_full = min(far_end, max(0, first - window + 1))  # keys far for every row of the chunk
    user = (lambda a, b: chunk_mask[..., a:b]) if chunk_mask is not None else (lambda a, b: None)
    parts = []
    if n_full > 0:
        parts.append(_masked_part(q_far, k_far[:, :, :n_full], v[:, :, :n_full], None, user(0, n_full), scaling))
    if far_end > n_full:
        allowed = (qp[:, None] - k_pos[None, n_full:far_end]) >= window
        parts.append(_masked_part(q_far, k_far[:, :, n_full:far_end], v[:, :, n_full:far_end], allowed,
                                  user(n_full, far_end), scaling))
    if k_beg < k_end:
        dist = qp[:, None] - k_pos[None, k_beg:k_end]
        allowed = (dist < window) & (dist >= 0) if causal else dist < window
        parts.append(_masked_part(q_near, k_near[:, :, k_beg:k_end], v[:, :, k_beg:k_end], allowed,
                                  user(k_beg, k_end), scaling))
    return _lse_merge(parts)


def _lse_merge(parts):
    """Softmax attention over the union of the parts' keys, from each part's (out float32
    [B, H, Q, D], lse [B, H, Q]): outputs weighted by their share of the total exp-sum."""
    lse = torch.stack([l for _, l in parts])  # [P, B, H, Q]
    total = torch.logsumexp(lse, dim=0)
    weights = (lse - total).exp().nan_to_num(0.0)  # rows with no key at all: every weight 0
    return sum(o * w[..., None] for (o, _), w in zip(parts, weights))
