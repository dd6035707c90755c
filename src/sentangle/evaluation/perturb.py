"""Test-time perturbations of padded feature sequences: pure functions of their inputs and a generator.

Every function takes features (N, T, d) and boolean masks (N, T) (True = a real frame) as a model
receives them, returns new tensors and never touches its inputs. Padding stays exactly as it was,
so a perturbation can only change what a model could read anyway. Randomness comes only from the
`torch.Generator` passed in, so the same generator state gives the same corrupted data to every
model that is compared.

    gaussian_noise(x, mask, sigma, scale, g)   x + sigma * scale * N(0, 1) on real frames
    drop_frames(x, mask, rate, g)              each real frame masked out (and zeroed) with prob. rate,
                                               at least one real frame kept per sample that had one
    shuffle_frames(x, mask, g)                 real frames permuted among the real positions of their sample
"""

from __future__ import annotations

import zlib

import torch

__all__ = ["gaussian_noise", "drop_frames", "shuffle_frames", "generator_for", "feature_scale"]


def generator_for(seed: int, name: str) -> torch.Generator:
    """A generator that depends on the seed and the perturbation's name only (stable across runs and
    Python processes, unlike hash())."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)


def _check(x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.ndim != 3 or mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"expected features (N, T, d) and a bool mask (N, T); got {tuple(x.shape)} and "
            f"{tuple(mask.shape)} {mask.dtype}"
        )


def feature_scale(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-column std (d,) of the real frames: the unit in which noise levels are given."""
    _check(x, mask)
    real = x[mask]
    if real.shape[0] < 2:
        return torch.zeros(x.shape[-1], dtype=x.dtype)
    return real.double().std(0).to(x.dtype)


def gaussian_noise(
    x: torch.Tensor, mask: torch.Tensor, sigma: float, scale: torch.Tensor | float, generator: torch.Generator
) -> torch.Tensor:
    """Add N(0, (sigma * scale)^2) to every real frame; `scale` is a per-column (d,) or global std.

    Columns with scale 0 (constant on train, e.g. dropped by normalisation) get no noise.
    """
    _check(x, mask)
    if sigma < 0:
        raise ValueError(f"noise level sigma must be >= 0, got {sigma}")
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    scale = torch.as_tensor(scale, dtype=torch.float64)
    out = x.double() + sigma * scale * noise * mask[..., None]
    return out.to(x.dtype)


def drop_frames(
    x: torch.Tensor, mask: torch.Tensor, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask out each real frame independently with probability `rate` (zeroing its features, as
    padding is zero); the frame stays in place, so positions of the others do not move.

    A sample that would lose every real frame keeps one of them, chosen at random: "fewer frames"
    stays distinct from "modality missing", which is its own perturbation.
    """
    _check(x, mask)
    if not 0 <= rate < 1:
        raise ValueError(f"frame drop rate must be in [0, 1), got {rate}")
    u = torch.rand(mask.shape, generator=generator)
    keep = mask & (u >= rate)
    emptied = mask.any(1) & ~keep.any(1)
    if emptied.any():
        # the real frame with the largest draw survives: uniform among the sample's real frames
        score = torch.where(mask, u, torch.full_like(u, -1.0))
        idx = score[emptied].argmax(1)
        keep[emptied.nonzero().squeeze(1), idx] = True
    return x * keep[..., None].to(x.dtype), keep


def shuffle_frames(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Permute each sample's real frames among its real positions (uniformly); padding stays put."""
    _check(x, mask)
    n, t = mask.shape
    # Sorting random keys gives a uniform permutation; padded positions sort after every real one
    # (key 2 > any uniform draw), so real frames are only exchanged with real frames.
    keys = torch.where(mask, torch.rand((n, t), generator=generator), torch.full((n, t), 2.0))
    src = keys.argsort(dim=1, stable=True)  # per sample: real positions in random order, then padding positions
    dst = torch.where(mask, torch.zeros_like(keys), torch.full((n, t), 2.0)).argsort(dim=1, stable=True)
    # dst lists the real positions in order, then padding; frame src[k] moves to position dst[k].
    out = x.clone()
    rows = torch.arange(n)[:, None].expand(n, t)
    out[rows, dst] = x[rows, src]
    return out
