"""xPos: rotary encoding with exponential decay (Sun et al., 2022, "A Length-Extrapolatable Transformer").

Queries are rotated and scaled by zeta^(n / scale_base), keys rotated and scaled by
zeta^(-m / scale_base), per rotary pair k:

    zeta_k = (k / (d / 2) + gamma) / (1 + gamma),   k = 0 .. d/2 - 1,

so the score of query n and key m carries zeta^((n - m) / scale_base): rotation as in RoPE
and a decay with distance (faster for high-frequency pairs).

Applied inside attention after the cache (``rotate``): keys stay unrotated and unscaled in the
cache. Positions are measured from a reference, the last query of the chunk being computed
(r): q gets zeta^((n - r)/sb), k gets zeta^((r - m)/sb). The products are unchanged but the key
factors are <= 1 and the query factors >= zeta_0^(-chunk/sb) stay bounded whatever the absolute
position; long prefills are computed in query chunks of ``chunk_size`` for that reason. Keys after
the reference (masked anyway, e.g. empty static-cache slots) are scaled as if at the reference.

Causal models only: for keys after the query the factor would grow instead of decay.
"""
from __future__ import annotations

import torch

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, apply_rotary, positive
from .rope import rope_cos_sin, rope_inv_freq


def xpos_zeta(head_dim: int, gamma: float) -> torch.Tensor:
    """zeta [head_dim // 2] fp32."""
    k = torch.arange(head_dim // 2, dtype=torch.float32)
    return (k / (head_dim / 2) + gamma) / (1 + gamma)


@register_encoding("xpos")
class XPos(PositionalEncoding):
    description = "rotary with exponential decay zeta^((n-m)/scale_base) (Sun et al.), causal models"
    kind = "rotary"
    OPTIONS = {
        "theta": Option(float, 10000.0, "rotary base (default: the model's own rope_theta, else 10000)", positive,
                        "must be > 0"),
        "gamma": Option(float, 0.4, "gamma of zeta_k = (2k/d + gamma) / (1 + gamma)", positive, "must be > 0"),
        "scale_base": Option(float, 512.0, "positions per decay unit", positive, "must be > 0"),
        "chunk_size": Option(int, 2048, "queries per chunk in long prefills (bounds the query factors)",
                             positive, "must be > 0"),
    }

    @classmethod
    def default_options(cls, spec: ModelSpec):
        opts = super().default_options(spec)
        if spec.native == "rotary" and spec.rope_theta is not None:
            opts["theta"] = spec.rope_theta
        return opts

    def __init__(self, spec: ModelSpec, **options):
        if not spec.causal:
            raise ValueError(
                f"xpos decays scores with n - m and would amplify keys after the query in a bidirectional "
                f"encoder; {spec.model_type} is one (use rope, alibi, kerple, fire or xl there)"
            )
        super().__init__(spec, **options)
        if spec.head_dim % 2:
            raise ValueError(f"xpos needs an even head dimension, this model has {spec.head_dim}")
        self._inv_freq = rope_inv_freq(spec.head_dim, self.options["theta"])
        log_zeta = torch.log(xpos_zeta(spec.head_dim, self.options["gamma"]))
        self._log_zeta = torch.cat((log_zeta, log_zeta))  # half-split layout, [head_dim]
        self.rotate_chunk = self.options["chunk_size"]

    def _consts(self, device):
        if self._inv_freq.device != torch.device(device):
            self._inv_freq, self._log_zeta = self._inv_freq.to(device), self._log_zeta.to(device)
        return self._inv_freq, self._log_zeta

    def factors(self, q_pos: torch.Tensor, k_pos: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale factors q [Q, D], k [K, D] (fp32) relative to the last query."""
        _, log_zeta = self._consts(device)
        ref = q_pos[-1]
        sb = self.options["scale_base"]
        q_exp = (q_pos - ref).float()[:, None] / sb  # <= 0
        k_exp = (ref - torch.minimum(k_pos, ref)).float()[:, None] / sb  # >= 0
        return torch.exp(q_exp * log_zeta), torch.exp(k_exp * log_zeta)

    def rotate(self, query: torch.Tensor, key: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        """query [B, H, Q, D], key [B, Hkv, K, D], raw cache positions q_pos [Q], k_pos [K] -> rotated, scaled."""
        inv_freq, _ = self._consts(query.device)
        qs, ks = self.factors(q_pos, k_pos, query.device)
        cq, sq = rope_cos_sin(q_pos, inv_freq, torch.float32)
        ck, sk = rope_cos_sin(k_pos, inv_freq, torch.float32)
        q = apply_rotary(query.float(), cq * qs, sq * qs).to(query.dtype)
        k = apply_rotary(key.float(), ck * ks, sk * ks).to(key.dtype)
        return q, k
