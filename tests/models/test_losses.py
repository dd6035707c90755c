"""Each auxiliary loss and shared layer against an independent computation (numpy or loops)."""

import math

import numpy as np
import pytest
import torch

from sentangle.models import losses as L
from sentangle.models.layers import CrossAttention, FactorizedBilinearPooling, grad_reverse

rng = np.random.default_rng(0)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def test_cmd_against_numpy():
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, 2.0, size=(9, 3))
    want = np.linalg.norm(x.mean(0) - y.mean(0))
    for k in range(2, 6):
        want += np.linalg.norm(((x - x.mean(0)) ** k).mean(0) - ((y - y.mean(0)) ** k).mean(0))
    assert L.cmd(t(x), t(y), 5).item() == pytest.approx(want, rel=1e-10)
    assert L.cmd(t(x), t(x)).item() == pytest.approx(0.0, abs=1e-12)
    # K=1 is the distance of the means only
    assert L.cmd(t(x), t(y), 1).item() == pytest.approx(np.linalg.norm(x.mean(0) - y.mean(0)))


def test_cosine_squared_by_hand():
    x = t([[1.0, 0.0], [1.0, 1.0]])
    y = t([[0.0, 2.0], [1.0, 0.0]])
    # pair 1 orthogonal -> 0; pair 2 cos = 1/sqrt(2) -> 0.5; mean 0.25
    assert L.cosine_squared(x, y).item() == pytest.approx(0.25)


def test_orthogonality_against_numpy():
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    xc, yc = x - x.mean(0), y - y.mean(0)
    xn = xc / (np.linalg.norm(xc, axis=1, keepdims=True) + 1e-6)
    yn = yc / (np.linalg.norm(yc, axis=1, keepdims=True) + 1e-6)
    assert L.orthogonality(t(x), t(y)).item() == pytest.approx(((xn.T @ yn) ** 2).mean(), rel=1e-9)
    # codes whose batch columns are orthogonal give 0; identical codes give a large value
    a, b = t([[1.0], [1.0], [-1.0], [-1.0]]), t([[1.0], [-1.0], [1.0], [-1.0]])
    assert L.orthogonality(a, b).item() == pytest.approx(0.0, abs=1e-12)
    assert L.orthogonality(a, a).item() == pytest.approx(16.0, rel=1e-5)  # (sum of 4 ones)^2


def _hsic_numpy(x, y):
    n = len(x)

    def gram(z):
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        s2 = np.median(d2[~np.eye(n, dtype=bool)])
        return np.exp(-d2 / (2 * s2))

    h = np.eye(n) - 1.0 / n
    return np.trace(gram(x) @ h @ gram(y) @ h) / (n - 1) ** 2


def test_hsic_against_numpy_and_behaviour():
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    assert L.hsic(t(x), t(y)).item() == pytest.approx(_hsic_numpy(x, y), rel=1e-8)
    n = 200
    a = rng.normal(size=(n, 2))
    independent = L.hsic(t(a), t(rng.normal(size=(n, 2)))).item()
    dependent = L.hsic(t(a), t(np.tanh(a) + 0.1 * rng.normal(size=(n, 2)))).item()
    nonlinear = L.hsic(t(a[:, :1]), t(a[:, :1] ** 2)).item()  # uncorrelated but dependent
    assert independent < 0.01
    assert dependent > 10 * independent and nonlinear > 5 * independent


def _jsd_np(p, q):
    m = (p + q) / 2
    kl = lambda a, b: (a * np.log(a / b)).sum()
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_temporal_jsd_per_sample_with_mask_against_loop():
    x = rng.normal(size=(3, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool)
    vals = [
        _jsd_np(_softmax(x[b, i]), _softmax(x[b, i + 1]))
        for b in range(3)
        for i in range(4)
        if mask[b, i] and mask[b, i + 1]
    ]
    got = L.temporal_jsd(t(x), torch.tensor(mask)).item()
    assert got == pytest.approx(np.mean(vals), rel=1e-9)
    # padded content cannot matter
    x2 = x.copy()
    x2[0, 3:] = 50.0
    assert L.temporal_jsd(t(x2), torch.tensor(mask)).item() == pytest.approx(got)
    # a constant sequence has no temporal variation
    assert L.temporal_jsd(t(np.repeat(x[:, :1], 5, 1))).item() == pytest.approx(0.0, abs=1e-12)
    assert 0 <= got <= math.log(2)


def test_temporal_jsd_batch_mean_form():
    x = rng.normal(size=(4, 3, 5))
    p = np.stack([[_softmax(x[b, i]) for i in range(3)] for b in range(4)]).mean(0)
    want = np.mean([_jsd_np(p[i], p[i + 1]) for i in range(2)])
    assert L.temporal_jsd(t(x), None, batch_mean=True).item() == pytest.approx(want, rel=1e-9)


def test_total_variation_against_loop():
    x = rng.normal(size=(2, 6, 3))
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], bool)
    for order in (1, 2):
        vals = []
        for b in range(2):
            d = x[b]
            m = mask[b]
            for _ in range(order):
                d = d[1:] - d[:-1]
                m = m[1:] & m[:-1]
            vals += [np.abs(d[i]).sum() for i in range(len(d)) if m[i]]
        assert L.total_variation(t(x), torch.tensor(mask), order).item() == pytest.approx(np.mean(vals), rel=1e-9)
    ramp = torch.arange(6.0).view(1, 6, 1).repeat(1, 1, 2)
    assert L.total_variation(ramp, order=2).item() == 0.0  # a linear trend is free under order 2
    assert L.total_variation(ramp, order=1).item() == pytest.approx(2.0)  # |1| per feature, 2 features


def test_additive_angular_margin_against_formula():
    f, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    y = np.array([0, 2, 1, 2])
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = fn @ wn.T
    want = 30 * cos.copy()
    for i, c in enumerate(y):  # ArcFace's fallback past theta = pi - m
        th = np.arccos(cos[i, c])
        want[i, c] = 30 * (np.cos(th + 0.5) if th < np.pi - 0.5 else cos[i, c] - 0.5 * np.sin(0.5))
    got = L.additive_angular_margin_logits(t(f), t(w), torch.tensor(y), 30, 0.5).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    logp = want - np.log(np.exp(want).sum(1, keepdims=True))
    assert L.margin_softmax_loss(t(f), t(w), torch.tensor(y)).item() == pytest.approx(
        -logp[np.arange(4), y].mean(), rel=1e-6
    )
    # the margin makes the loss larger than plain softmax on the same scaled cosines
    plain = torch.nn.functional.cross_entropy(30 * t(cos), torch.tensor(y)).item()
    assert L.margin_softmax_loss(t(f), t(w), torch.tensor(y)).item() > plain


def test_angular_margin_never_rewards_moving_away_from_the_class():
    """Unguarded, cos(theta + m) rises again past theta = pi - m; the true-class logit must fall
    with the angle on both sides of that boundary, with either fallback."""
    m = 0.5
    angles = torch.tensor([np.pi - m - 0.2, np.pi - m - 1e-3, np.pi - m + 1e-3, np.pi - m + 0.2, np.pi - 0.01])
    features = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # unit vectors at those angles
    centre, label = torch.tensor([[1.0, 0.0]]), torch.zeros(len(angles), dtype=torch.long)
    for easy in (False, True):
        logit = L.additive_angular_margin_logits(features, centre, label, s=1.0, m=m, easy_margin=easy)[:, 0]
        assert (logit.diff() < 0).all(), (easy, logit)
    hard = L.additive_angular_margin_logits(features, centre, label, s=1.0, m=m)[:, 0]
    cos = torch.cos(angles)
    torch.testing.assert_close(hard[:2], torch.cos(angles[:2] + m))  # the margin before the boundary
    torch.testing.assert_close(hard[2:], cos[2:] - m * np.sin(m))  # ArcFace's fallback after it
    # the plain formula would have moved the wrong way there
    assert torch.cos(angles[3] + m) > torch.cos(angles[2] + m)
    easy = L.additive_angular_margin_logits(features, centre, label, s=1.0, m=m, easy_margin=True)[:, 0]
    torch.testing.assert_close(easy, cos)  # every angle here is past 90 degrees: no margin


def test_losses_are_nonnegative_and_differentiable():
    x = torch.randn(8, 5, 4, requires_grad=True)
    y = torch.randn(8, 4)
    mask = torch.rand(8, 5) > 0.3
    for val in (
        L.cmd(x.mean(1), y),
        L.cosine_squared(x.mean(1), y),
        L.orthogonality(x.mean(1), y),
        L.hsic(x.mean(1), y),
        L.temporal_jsd(x, mask),
        L.total_variation(x, mask),
    ):
        assert val.item() >= 0
        (g,) = torch.autograd.grad(val, x)
        assert torch.isfinite(g).all()


def test_grad_reverse():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x.detach())
    y.sum().backward()
    assert x.grad.tolist() == [-0.5, -0.5]


def test_factorized_bilinear_pooling_shape_and_normalisation():
    torch.manual_seed(0)
    fbp = FactorizedBilinearPooling(4, 6, out=8, k=3, dropout=0.0).eval()
    x, y = torch.randn(5, 4), torch.randn(5, 6)
    z = fbp(x, y)
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
    # against the formula with its own weights
    j = (fbp.u(x) * fbp.v(y)).view(5, 8, 3).sum(-1)
    j = torch.sign(j) * torch.sqrt(j.abs() + 1e-8)
    torch.testing.assert_close(z, j / j.norm(dim=-1, keepdim=True))


def test_cross_attention_ignores_padded_keys():
    torch.manual_seed(0)
    ca = CrossAttention(8, heads=2, dropout=0.0).eval()
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    a = ca(q, kv, mask)
    kv2 = kv.clone()
    kv2[0, 2:] = 99.0
    torch.testing.assert_close(a, ca(q, kv2, mask))


# ---- found by mutation testing (docs/mutation.md) -------------------------------------------------
def test_temporal_jsd_batch_mean_with_a_mask_against_loop():
    x = rng.normal(size=(3, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], bool)
    # per time step: the mean softmax over the samples whose frame is real there
    p = [np.mean([_softmax(x[b, i]) for b in range(3) if mask[b, i]], axis=0) for i in range(4)]
    want = np.mean([_jsd_np(p[i], p[i + 1]) for i in range(3)])  # step 4 has no real frame
    got = L.temporal_jsd(t(x), torch.tensor(mask), batch_mean=True)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # no real adjacent pair at all: a scalar zero, in every form
    lone = torch.tensor([[True, False, False]] * 3)
    for batch_mean in (False, True):
        z = L.temporal_jsd(t(x[:, :3]), lone, batch_mean=batch_mean)
        assert z.shape == () and z.item() == 0.0
    one_frame = L.temporal_jsd(t(x[:, :1]))
    assert one_frame.shape == () and one_frame.item() == 0.0


def test_cosine_margin_softmax_loss_against_formula():
    f, w, y = rng.normal(size=(4, 5)), rng.normal(size=(3, 5)), np.array([0, 2, 1, 2])
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    for s, m in ((30.0, 0.5), (8.0, 0.2)):
        z = s * (cos - m * np.eye(3)[y])
        logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        want = -logp[np.arange(4), y].mean()
        got = L.cosine_margin_softmax_loss(t(f), t(w), torch.tensor(y), s, m).item()
        assert got == pytest.approx(want, rel=1e-9)
    assert L.cosine_margin_softmax_loss(t(f), t(w), torch.tensor(y)).item() == pytest.approx(
        L.cosine_margin_softmax_loss(t(f), t(w), torch.tensor(y), 30.0, 0.5).item()
    )


def test_additive_angular_margin_defaults_shapes_and_finite_gradients():
    f, w, y = rng.normal(size=(4, 5)), rng.normal(size=(3, 5)), np.array([0, 2, 1, 2])  # B, C, D all differ
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    want = 30 * cos
    want[np.arange(4), y] = 30 * np.cos(np.arccos(cos[np.arange(4), y]) + 0.5)
    np.testing.assert_allclose(L.additive_angular_margin_logits(t(f), t(w), torch.tensor(y)).numpy(), want, rtol=1e-6)
    # a feature on its class centre, or opposite to it: cos = +-1, where acos has an infinite slope
    feats = torch.tensor(np.stack([w[0], -w[1]]), requires_grad=True)
    L.margin_softmax_loss(feats, t(w), torch.tensor([0, 1])).backward()
    assert torch.isfinite(feats.grad).all()


def test_defaults_of_cmd_and_total_variation():
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, 2.0, size=(9, 3))
    assert L.cmd(t(x), t(y)).item() == pytest.approx(L.cmd(t(x), t(y), 5).item(), rel=1e-12)
    assert L.cmd(t(x), t(y)).item() != pytest.approx(L.cmd(t(x), t(y), 6).item(), rel=1e-6)
    seq = t(rng.normal(size=(2, 6, 3)))
    second = (seq[:, 2:] - 2 * seq[:, 1:-1] + seq[:, :-2]).abs().sum(-1).mean()
    assert L.total_variation(seq).item() == pytest.approx(second.item(), rel=1e-12)
    for length in (1, 2):  # too short for a second difference: a scalar zero
        z = L.total_variation(seq[:, :length], torch.ones(2, length, dtype=torch.bool))
        assert z.shape == () and z.item() == 0.0
    none_real = L.total_variation(seq, torch.tensor([[True, False, True, False, True, False]] * 2))
    assert none_real.shape == () and none_real.item() == 0.0


def test_hsic_small_batches_and_scale():
    x, y = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    assert L.hsic(t(x), t(y)).item() == pytest.approx(_hsic_numpy(x, y), rel=1e-9)  # n = 2 is defined
    z = L.hsic(t(x[:1]), t(y[:1]))
    assert z.shape == () and z.item() == 0.0
    # the median-distance bandwidth makes HSIC scale-free (down to the 1e-8 floor on the bandwidth)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    assert L.hsic(t(1e-2 * x), t(1e-2 * y)).item() == pytest.approx(_hsic_numpy(x, y), rel=1e-6)


def test_cosine_squared_rows_and_small_vectors():
    x, y = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    assert L.cosine_squared(t(x), t(y)).item() == pytest.approx((cos**2).mean(), rel=1e-9)
    # tiny but parallel rows are still parallel: eps only guards a zero norm
    assert L.cosine_squared(t(1e-3 * x), t(2e-3 * x)).item() == pytest.approx(1.0, rel=1e-6)


def test_temporal_jsd_without_mask_and_with_a_gap_in_time():
    x = rng.normal(size=(2, 4, 3))
    want = np.mean([_jsd_np(_softmax(x[b, i]), _softmax(x[b, i + 1])) for b in range(2) for i in range(3)])
    assert L.temporal_jsd(t(x)).item() == pytest.approx(want, rel=1e-9)
    # step 1 is padding in every sample: only the pair (2, 3) is left in the batch-mean form
    mask = torch.tensor([[True, False, True, True]] * 2)
    p = [np.mean([_softmax(x[b, i]) for b in range(2)], axis=0) for i in range(4)]
    got = L.temporal_jsd(t(x), mask, batch_mean=True).item()
    assert got == pytest.approx(_jsd_np(p[2], p[3]), rel=1e-9)
