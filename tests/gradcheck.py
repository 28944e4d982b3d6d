"""Finite-difference checks of a layer's or a model's backward pass.

The layers compute in float32, so the checks use central differences with a step h that is
large against float32 rounding (1e-2) yet small against the curvature of the smooth test
functions, on a random subset of coordinates, with the loss L = sum(y * R) summed in
float64 (R fixed random weights).
"""

from __future__ import annotations

import numpy as np


def check_coords(
    loss_fn, arr: np.ndarray, grad: np.ndarray, rng, name: str, h=1e-2, n=12, tol=2e-2
):
    """Compare grad with central differences of loss_fn() at n random coordinates of arr
    (an array, or a Variable: then each perturbation is written inside ``updating()``, which
    bumps its version as any weight update must, so caches derived from it are refreshed)."""
    var = arr if hasattr(arr, "updating") else None
    arr = var.value if var is not None else arr

    def set_coord(i, value):
        if var is None:
            arr.reshape(-1)[i] = value
        else:
            with var.updating() as w:
                w.reshape(-1)[i] = value

    flat, gflat = arr.reshape(-1), np.asarray(grad, np.float64).reshape(-1)
    assert flat.base is arr or flat.base is arr.base or np.shares_memory(flat, arr)
    scale = max(1e-3, float(np.abs(gflat).max()))
    for i in rng.choice(flat.size, size=min(n, flat.size), replace=False):
        old = flat[i]
        set_coord(i, old + h)
        lp = loss_fn()
        set_coord(i, old - h)
        lm = loss_fn()
        set_coord(i, old)
        num = (lp - lm) / (2 * h)
        assert abs(num - gflat[i]) <= tol * max(scale, abs(num)), (
            f"{name}[{np.unravel_index(i, arr.shape)}]: backward {gflat[i]:.6g}, "
            f"finite difference {num:.6g} (scale {scale:.3g})"
        )


def check_layer(layer, x, rng, training=True, reset=None, h=1e-2, tol=2e-2, n=12):
    """Check dL/dx and dL/dw of ``layer`` at x by finite differences."""
    x = np.array(x, np.float32)
    layer.build_for(x.shape[1:])

    def forward():
        if reset is not None:
            reset()
        return layer.forward(x, training)

    y, ctx = forward()
    r = rng.standard_normal(y.shape).astype(np.float32)

    def loss():
        return float(np.sum(forward()[0].astype(np.float64) * r))

    for v in layer.weights:
        v.grad = None
    dx = layer.backward(ctx, r.copy(), True)
    assert dx.shape == x.shape
    check_coords(loss, x, dx, rng, f"{layer.name} dx", h, n, tol)
    for v in layer.trainable_weights:
        assert v.grad is not None, f"{v.name} got no gradient"
        check_coords(loss, v, v.grad, rng, v.name, h, n, tol)
    return y
