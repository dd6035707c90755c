"""Auxiliary losses shared by the models: pure functions of tensors, each unit-tested on its own.

Conventions: summaries are (B, D); sequences are (B, T, D) with a bool mask (B, T), True = real.
Every loss returns a scalar tensor and is non-negative.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable

import torch
import torch.nn.functional as F


def total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of loss terms (at least one), typed as a tensor: the built-in sum starts from the
    int 0, so its type admits an int. The numbers are the same, as 0 + x == x."""
    return functools.reduce(operator.add, terms)


# ---- distribution matching -------------------------------------------------------------------
def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central Moment Discrepancy (Zellinger et al. 2017) between two samples (B, D) and (B', D).

    ||E x - E y||_2 + sum_{k=2..K} ||E (x - E x)^k - E (y - E y)^k||_2, the form MISA and the
    RTIL code use (no (b - a)^k scaling: the codes are bounded by their activations anyway).
    """
    mx, my = x.mean(0), y.mean(0)
    cx, cy = x - mx, y - my
    loss = torch.linalg.vector_norm(mx - my)
    for k in range(2, moments + 1):
        loss = loss + torch.linalg.vector_norm(cx.pow(k).mean(0) - cy.pow(k).mean(0))
    return loss


# ---- decorrelation / independence ------------------------------------------------------------
def cosine_squared(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over the batch of cos^2 between paired rows: 0 when every pair is orthogonal."""
    return F.cosine_similarity(x, y, dim=-1, eps=eps).pow(2).mean()


def orthogonality(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MISA's difference loss: squared Frobenius norm of X^T Y over centred, row-normalised codes,
    averaged over the D x D' entries. 0 when the two code spaces are orthogonal over the batch."""
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    y = y / (y.norm(dim=1, keepdim=True) + eps)
    return (x.t() @ y).pow(2).mean()


def _gaussian_gram(x: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    # median heuristic: sigma^2 = median of the pairwise squared distances (no gradient through it)
    sigma2 = torch.quantile(off.detach(), 0.5).clamp_min(1e-8) if off.numel() else d2.new_tensor(1.0)
    return torch.exp(-d2 / (2 * sigma2))


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimate (Gretton et al. 2005) with Gaussian kernels, median bandwidth:
    trace(K H L H) / (n - 1)^2. About 0 for independent x, y; positive when dependent."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    k, l_ = _gaussian_gram(x), _gaussian_gram(y)
    h = torch.eye(n, device=x.device, dtype=x.dtype) - 1.0 / n
    return torch.trace(k @ h @ l_ @ h) / (n - 1) ** 2


# ---- temporal regularisers -------------------------------------------------------------------
def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, 1:] & mask[:, :-1]  # adjacent pairs where both frames are real


def temporal_jsd(x: torch.Tensor, mask: torch.Tensor | None = None, batch_mean: bool = False) -> torch.Tensor:
    """Jensen-Shannon divergence between adjacent frames, each a softmax over features.

    Default: per sample and per adjacent pair of real frames, averaged over those pairs.
    `batch_mean=True`: the released RTIL code's form, which averages the softmax over the batch
    first (one distribution per time step) and counts every frame (pass mask=None for that).
    """
    p = x.softmax(-1)
    if batch_mean:
        if mask is not None:
            w = mask.to(p.dtype).unsqueeze(-1)
            p = (p * w).sum(0) / w.sum(0).clamp_min(1.0)  # (T, D)
            valid = mask.any(0)
            valid = valid[1:] & valid[:-1]
        else:
            p = p.mean(0)
            valid = torch.ones(p.shape[0] - 1, dtype=torch.bool, device=p.device)
        js = _jsd(p[:-1], p[1:])
        return js[valid].mean() if valid.any() else x.new_zeros(())
    js = _jsd(p[:, :-1], p[:, 1:])  # (B, T-1)
    if mask is None:
        return js.mean() if js.numel() else x.new_zeros(())
    pm = _pair_mask(mask)
    return js[pm].mean() if pm.any() else x.new_zeros(())


def _jsd(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (torch.log(a + eps) - torch.log(b + eps))).sum(-1)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def total_variation(x: torch.Tensor, mask: torch.Tensor | None = None, order: int = 2) -> torch.Tensor:
    """1-D total variation along time: mean L1 norm of the `order`-th difference over real frames.

    order=1 penalises frame-to-frame change; order=2 (the IRG-SVR form: total variation *of*
    the frame-to-frame differences) penalises changes in the rate of change, so smooth trends
    stay free while jitter is suppressed. Only differences whose frames are all real count.
    """
    d, m = x, mask
    for _ in range(order):
        d = d[:, 1:] - d[:, :-1]
        m = None if m is None else _pair_mask(m)
    if d.shape[1] == 0:
        return x.new_zeros(())
    tv = d.abs().sum(-1)  # (B, T - order)
    if m is None:
        return tv.mean()
    return tv[m].mean() if m.any() else x.new_zeros(())


# ---- classification with margins ---------------------------------------------------------------
def additive_angular_margin_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    s: float = 30.0,
    m: float = 0.5,
    easy_margin: bool = False,
) -> torch.Tensor:
    """ArcFace logits: s * cos(theta_y + m) for the true class, s * cos(theta_j) for the others.

    Past theta_y = pi - m, cos(theta_y + m) would rise again as the angle grows, rewarding a
    feature for moving away from its class; there the true-class logit is cos(theta_y) - m sin(m),
    ArcFace's own fallback, which keeps falling. `easy_margin` instead applies the margin only
    where cos(theta_y) > 0 (ArcFace's other variant).
    features (B, D), weight (C, D) class centres, labels (B,). Use with cross-entropy.
    """
    cos = F.linear(F.normalize(features, dim=-1), F.normalize(weight, dim=-1)).clamp(-1 + 1e-7, 1 - 1e-7)
    margin = torch.cos(torch.acos(cos) + m)
    if easy_margin:
        margin = torch.where(cos > 0, margin, cos)
    else:
        margin = torch.where(cos > math.cos(math.pi - m), margin, cos - m * math.sin(m))
    target = F.one_hot(labels, cos.shape[-1]).bool()
    return s * torch.where(target, margin, cos)


def margin_softmax_loss(features, weight, labels, s: float = 30.0, m: float = 0.5) -> torch.Tensor:
    return F.cross_entropy(additive_angular_margin_logits(features, weight, labels, s, m), labels)


def cosine_margin_softmax_loss(features, weight, labels, s: float = 30.0, m: float = 0.5) -> torch.Tensor:
    """Additive cosine margin (CosFace): s * (cos(theta_y) - m) for the true class, s * cos(theta_j)
    for the others, then cross-entropy. The released RTIL/SATI code's discriminator loss.

    features (B, D), weight (C, D) class centres, labels (B,).
    """
    cos = F.linear(F.normalize(features, dim=-1), F.normalize(weight, dim=-1))
    target = F.one_hot(labels, cos.shape[-1]).to(cos.dtype)
    return F.cross_entropy(s * (cos - m * target), labels)
