"""Type stubs for the compiled core (csrc/bindings.cpp). Private: use pyconv.functional.

Conv and pooling arrays are float32 4-D views in *logical* order (N, C, H, W) for activations
and (O, C/groups, KH, KW) for weights, with any strides; batch-norm arrays are C-contiguous
(rows, channels) and (channels,). Outputs are preallocated by the caller.
"""

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]

class WeightCache:
    """A layer's packed weights kept between conv2d_forward calls (csrc/core.h)."""

    def __init__(self) -> None: ...
    def clear(self) -> None: ...
    @property
    def nbytes(self) -> int: ...

def conv2d_forward(
    x: _F32,
    w: _F32,
    bias: _F32 | None,
    y: _F32,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    relu: bool = False,
    weight_cache: WeightCache | None = None,
    weight_version: int = 0,
) -> None: ...
def conv2d_backward_data(
    grad_out: _F32,
    w: _F32,
    grad_x: _F32,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    dil_h: int,
    dil_w: int,
    groups: int,
) -> None: ...
def conv2d_backward_weight(
    grad_out: _F32,
    x: _F32,
    grad_w: _F32 | None,
    grad_bias: _F32 | None,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    dil_h: int,
    dil_w: int,
    groups: int,
) -> None: ...
def batchnorm_forward(
    x: _F32,
    gamma: _F32 | None,
    beta: _F32 | None,
    epsilon: float,
    y: _F32,
    mean: _F32,
    var: _F32,
) -> None:
    """x, y: C-contiguous (M, C); gamma, beta, mean, var: (C,). Writes y, mean, var."""

def batchnorm_backward(
    grad_out: _F32,
    x: _F32,
    gamma: _F32 | None,
    mean: _F32,
    var: _F32,
    epsilon: float,
    batch_stats: bool,
    grad_x: _F32 | None,
    grad_gamma: _F32 | None,
    grad_beta: _F32 | None,
) -> None: ...
def channel_affine(x: _F32, scale: _F32, shift: _F32, y: _F32) -> None: ...
def affine_warp(x: _F32, matrices: _F32, y: _F32, fill: int, fill_value: float) -> None:
    """x, y: C-contiguous (N, H, W, C); matrices: (N, 2, 3) output -> input pixel maps."""

def dropout(x: _F32, rate: float, key: int, y: _F32) -> None:
    """y = x / (1 - rate) where hash(flat index, key) keeps the element, else 0."""

def set_conv_algorithm(name: str) -> None: ...
def get_conv_algorithm() -> str: ...
def empty(shape: tuple[int, ...] | list[int]) -> _F32:
    """Uninitialized C-contiguous float32 array on a pooled, 64-byte aligned buffer."""

def buffer_cache_bytes() -> int: ...
def buffer_cache_limit() -> int: ...
def set_buffer_cache_limit(bytes: int) -> None: ...
def release_buffer_cache() -> None: ...
def relu_backward(grad_out: _F32, y: _F32, grad_x: _F32) -> None:
    """grad_x = grad_out where y > 0, else 0 (grad_x may be grad_out itself)."""

def sgd_update(
    w: _F32, g: _F32, m: _F32 | None, lr: float, momentum: float, nesterov: bool
) -> None:
    """One SGD step in place: w -= lr*g, or with momentum m = momentum*m - lr*g and
    w += m (Nesterov: w += momentum*m - lr*g)."""

def adam_update(
    w: _F32,
    g: _F32,
    m: _F32,
    v: _F32,
    vhat: _F32 | None,
    step: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
) -> None:
    """In place: m, v (and vhat, AMSGrad) updated, w -= step * m / (sqrt(v) + epsilon)."""

def max_pool2d_forward(
    x: _F32,
    y: _F32,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
) -> None: ...
def max_pool2d_backward(
    grad_out: _F32,
    x: _F32,
    grad_x: _F32,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
) -> None: ...
def avg_pool2d_forward(
    x: _F32,
    y: _F32,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    count_include_pad: bool,
) -> None: ...
def avg_pool2d_backward(
    grad_out: _F32,
    grad_x: _F32,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    count_include_pad: bool,
) -> None: ...
def get_isa() -> str: ...
def set_isa(name: str) -> None: ...
def available_isas() -> list[str]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def peak_gflops(seconds: float = 0.2) -> float: ...
def release_workspace() -> None: ...
def workspace_bytes() -> int: ...
def default_num_threads_requested() -> int: ...
def in_forked_child() -> bool: ...
def _plan_conv(
    x_shape: tuple[int, ...] | list[int],
    w_shape: tuple[int, ...] | list[int],
    stride_h: int,
    stride_w: int,
    pad_t: int,
    pad_b: int,
    pad_l: int,
    pad_r: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    isa: str | None = None,
    algorithm: str | None = None,
    threads: int | None = None,
    x_dense_nhwc: bool = True,
    y_dense_nhwc: bool = True,
    w_dense_hwio: bool = True,
    weights_cached: bool = False,
) -> dict[str, object]:
    """Test hook: the conv2d forward's plan (csrc/conv_plan.h) for a geometry, as a dict:
    method ("direct", "winograd", "small_matmul"), weight_layout, workspace_bytes,
    output_size, direct (tiling, task order, workspace floats) and winograd when chosen.
    isa, algorithm, threads: the active ones unless given."""

def _run_native_tests() -> list[str]:
    """Test hook: runs the C++ unit tests compiled into the module (csrc/native_tests*.cpp);
    returns the failures (empty when all pass)."""
