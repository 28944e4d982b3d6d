"""The float64 references are the judge, so they are checked first: their backward passes
against finite differences of their forward passes, and everything against PyTorch where it
is installed."""

from __future__ import annotations

import numpy as np
import pytest
import ref64

CASES = [
    # (N, C, H, W, O, k, stride, pads, dilation, groups)
    (2, 3, 6, 5, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (1, 4, 7, 7, 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (1, 2, 5, 6, 3, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("case", CASES)
def test_conv_backward_matches_finite_differences(case, rng):
    n, c, h, w, o, k, s, pads, d, g = case
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // g, *k))
    b = rng.standard_normal(o)
    y = ref64.conv2d(x, wt, b, s, pads, d, g)
    r = rng.standard_normal(y.shape)  # loss = sum(y * r), so grad_out = r
    gx, gw, gb = ref64.conv2d_backward(r, x, wt, s, pads, d, g)

    def loss(xx=x, ww=wt, bb=b):
        return float((ref64.conv2d(xx, ww, bb, s, pads, d, g) * r).sum())

    np.testing.assert_allclose(gx, ref64.numerical_grad(lambda v: loss(xx=v), x), atol=1e-6)
    np.testing.assert_allclose(gw, ref64.numerical_grad(lambda v: loss(ww=v), wt), atol=1e-6)
    np.testing.assert_allclose(gb, ref64.numerical_grad(lambda v: loss(bb=v), b), atol=1e-6)


@pytest.mark.parametrize(
    "k,s,pads,ceil_mode,cip",
    [
        ((2, 2), (2, 2), (0, 0, 0, 0), False, True),
        ((3, 3), (2, 2), (1, 1, 1, 1), True, False),
        ((3, 2), (2, 1), (1, 1, 0, 1), True, True),
    ],
)
def test_pool_backward_matches_finite_differences(k, s, pads, ceil_mode, cip, rng):
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0  # distinct: no ties
    ym = ref64.max_pool2d(x, k, s, pads, ceil_mode)
    r = rng.standard_normal(ym.shape)
    gm = ref64.max_pool2d_backward(r, x, k, s, pads, ceil_mode)
    fd = ref64.numerical_grad(
        lambda v: float((ref64.max_pool2d(v, k, s, pads, ceil_mode) * r).sum()), x, eps=1e-4
    )
    np.testing.assert_allclose(gm, fd, atol=1e-6)
    ya = ref64.avg_pool2d(x, k, s, pads, ceil_mode, cip)
    ra = rng.standard_normal(ya.shape)
    ga = ref64.avg_pool2d_backward(ra, x, k, s, pads, ceil_mode, cip)
    fd = ref64.numerical_grad(
        lambda v: float((ref64.avg_pool2d(v, k, s, pads, ceil_mode, cip) * ra).sum()), x
    )
    np.testing.assert_allclose(ga, fd, atol=1e-6)


def test_reference_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    for n, c, h, w, o, k, s, pads, d, g in CASES:
        t, b, l, r = pads
        x = rng.standard_normal((n, c, h, w))
        wt = rng.standard_normal((o, c // g, *k))
        bias = rng.standard_normal(o)
        xt = torch.tensor(np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))), requires_grad=True)
        wtt = torch.tensor(wt, requires_grad=True)
        bt = torch.tensor(bias, requires_grad=True)
        yt = tf.conv2d(xt, wtt, bt, stride=s, dilation=d, groups=g)
        y = ref64.conv2d(x, wt, bias, s, pads, d, g)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
        gy = rng.standard_normal(y.shape)
        yt.backward(torch.tensor(gy))
        gx, gw, gb = ref64.conv2d_backward(gy, x, wt, s, pads, d, g)
        np.testing.assert_allclose(gx, xt.grad.numpy()[:, :, t : t + h, l : l + w], atol=1e-10)
        np.testing.assert_allclose(gw, wtt.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(gb, bt.grad.numpy(), atol=1e-10)
    x = rng.standard_normal((2, 3, 9, 8))
    for k, s, p, ceil_mode, cip in [
        (2, 2, 0, False, True),
        (3, 2, 1, True, False),
        (3, 2, 1, True, True),
        (3, 3, 1, True, True),
    ]:
        xt = torch.tensor(x)
        np.testing.assert_allclose(
            ref64.max_pool2d(x, (k, k), (s, s), (p,) * 4, ceil_mode),
            tf.max_pool2d(xt, k, s, p, ceil_mode=ceil_mode).numpy(),
        )
        np.testing.assert_allclose(
            ref64.avg_pool2d(x, (k, k), (s, s), (p,) * 4, ceil_mode, cip),
            tf.avg_pool2d(xt, k, s, p, ceil_mode=ceil_mode, count_include_pad=cip).numpy(),
            atol=1e-12,
        )
