"""Helpers shared by the tests: the float64 reference, the error measure, and input builders."""

import contextlib
import dataclasses
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
# Every device-parametrised test runs on the CPU, and on CUDA where a GPU is present.
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

ACTIVATIONS = [None, "relu", "relu6", "silu", "gelu", "hardswish"]

# Relative error bounds (||out - ref|| / ||ref||) against a float64 reference.
TOL = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
TF32_TOL = 1e-3

LAYOUTS = ["nchw", "channels_last", "slice", "permuted", "channels_last_slice"]

Pair = Union[int, Tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Case:
    """One convolution geometry of the sweep."""

    name: str
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    stride: Pair = 1
    padding: Pair = 0
    groups: int = 1

    def __str__(self):
        return self.name

    @property
    def input_shape(self):
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.c_out, self.c_in // self.groups, 1, 1)

    @property
    def output_shape(self):
        sh, sw = _pair(self.stride)
        ph, pw = _pair(self.padding)
        return (self.n, self.c_out, (self.h + 2 * ph - 1) // sh + 1, (self.w + 2 * pw - 1) // sw + 1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


CASES = [
    Case("cin1_cout1", 2, 1, 1, 5, 4),
    Case("cin3_cout17", 2, 3, 17, 5, 3),
    Case("cin17_cout3", 2, 17, 3, 4, 4),
    Case("cin63_cout63", 2, 63, 63, 3, 5),
    Case("hw1", 3, 17, 5, 1, 1),
    Case("hw1_batch20", 20, 9, 24, 1, 1),  # more one-pixel images than a narrow CPU tile's columns
    Case("batch1", 1, 8, 16, 6, 6),
    Case("stride2", 2, 6, 10, 7, 6, stride=2),
    Case("stride2x1", 2, 5, 7, 5, 5, stride=(2, 1)),
    Case("pad1", 2, 6, 9, 4, 5, padding=1),
    Case("pad1x2", 2, 7, 5, 3, 4, padding=(1, 2)),
    Case("stride2_pad1x2", 2, 4, 6, 6, 5, stride=2, padding=(1, 2)),
    Case("stride3x2_pad2", 1, 3, 4, 7, 7, stride=(3, 2), padding=2),
    Case("groups2", 2, 6, 10, 4, 4, groups=2),
    Case("groups3", 2, 9, 6, 5, 3, groups=3),
    Case("groups4_stride2_pad1", 2, 8, 12, 5, 5, stride=2, padding=1, groups=4),
    Case("depthwise17", 2, 17, 17, 3, 3, groups=17),
    Case("wide", 2, 64, 48, 9, 9),
    Case("hw1_pad1", 2, 5, 3, 1, 1, padding=1),
    Case("hw1_stride2", 2, 5, 3, 1, 1, stride=2),
    Case("odd_large", 2, 33, 65, 7, 13),
]


# Channel reductions whose output tiles alone would leave most SMs idle, so the forward or the
# grad-input cuts K into chunks (fp32 partials, added in a fixed order by a second kernel that also
# applies the epilogue): a squeeze-excite layer, few output channels on a 7x7 map, a strided
# grad-input that scatters through the pixel map, and a grouped one.
SPLIT_CASES = [
    Case("se_1152_48", 32, 1152, 48, 1, 1),
    Case("cout40_7x7", 4, 576, 40, 7, 7),
    Case("gradin_scatter", 2, 40, 600, 7, 7, stride=2, padding=1),
    Case("groups2", 8, 256, 64, 3, 3, groups=2),
]


def make_tensor(shape, layout="nchw", dtype=torch.float32, device="cpu", scale=1.0):
    """A fresh random (normal) tensor of `shape` with the memory layout `layout`.

    nchw / channels_last: dense in that format. slice: an NCHW-ordered view skipping every other
    channel and a column. permuted: a permuted view of a dense tensor, neither NCHW nor NHWC.
    channels_last_slice: a slice of a channels_last tensor (channels strided by 2).
    """
    n, c, h, w = shape

    def randn(*size):
        return (torch.randn(*size, dtype=torch.float64, device=device) * scale).to(dtype)

    if layout == "nchw":
        t = randn(n, c, h, w)
    elif layout == "channels_last":
        t = randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    elif layout == "slice":
        t = randn(n, 2 * c, h, w + 2)[:, ::2, :, 1 : w + 1]
    elif layout == "permuted":
        t = randn(h, c, n, w).permute(2, 1, 0, 3)
    elif layout == "channels_last_slice":
        t = randn(n, 2 * c, h + 1, w).contiguous(memory_format=torch.channels_last)[:, 1::2, 1:, :]
    else:
        raise AssertionError(layout)
    assert t.shape == (n, c, h, w)
    if layout in ("slice", "permuted", "channels_last_slice") and t.numel() > 1:
        assert not t.is_contiguous() and not t.is_contiguous(memory_format=torch.channels_last)
    return t


def misaligned(shape, dtype, device, channels_last=False):
    """A fresh random tensor of `shape` whose data starts one element into its storage."""
    numel = 1
    for s in shape:
        numel *= s
    flat = torch.randn(numel + 1, dtype=torch.float64, device=device).to(dtype)[1:]
    assert flat.storage_offset() == 1
    if channels_last and len(shape) == 4:
        n, c, h, w = shape
        t = flat.view(n, h, w, c).permute(0, 3, 1, 2)
        assert t.is_contiguous(memory_format=torch.channels_last)
    else:
        t = flat.view(shape)
    return t


@contextlib.contextmanager
def poisoned_allocations():
    """Inside, every tensor PyTorch allocates uninitialised (at::empty, on any device: our ops'
    outputs and workspaces too) starts as NaN, so an element a kernel fails to write fails the
    finiteness check of rel_err. This is PyTorch's own fill of uninitialised memory
    (torch.utils.deterministic.fill_uninitialized_memory), which acts only in deterministic mode;
    warn_only keeps ops without a deterministic implementation running (they warn)."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.utils.deterministic.fill_uninitialized_memory = saved[2]


def act64(y: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation is None:
        return y
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    if activation == "silu":
        return F.silu(y)
    if activation == "gelu":
        return F.gelu(y, approximate="none")
    if activation == "hardswish":
        return F.hardswish(y)
    raise AssertionError(activation)


def reference(x, weight, bias=None, stride=1, padding=0, groups=1, activation=None, residual=None):
    """act(F.conv2d(...) + residual), computed in float64 on the CPU from the given values
    (differentiable: float64 CPU leaves get gradients)."""

    def f64(t):
        return None if t is None else t.to("cpu", torch.float64)

    # A grouped 1x1 conv is a dense one with a block-diagonal weight; the dense form avoids
    # F.conv2d's very slow float64 grouped CPU path (0.2 s for a 17-channel depthwise layer).
    w = f64(weight)
    if groups > 1:
        c_out, c_in_g = w.shape[:2]
        dense = torch.zeros(c_out, c_in_g * groups, 1, 1, dtype=torch.float64)
        o_g = c_out // groups
        for g in range(groups):
            dense[g * o_g : (g + 1) * o_g, g * c_in_g : (g + 1) * c_in_g] = w[g * o_g : (g + 1) * o_g]
        w = dense
    y = F.conv2d(f64(x), w, f64(bias), stride, padding, 1, 1)
    if residual is not None:
        y = y + f64(residual)
    return act64(y, activation)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "non-finite values in the output"
    ref_norm = ref.norm().item()
    assert ref_norm > 0, "test construction error: the reference is all zeros"
    return (out - ref).norm().item() / ref_norm


def assert_rel_close(out, ref, tol, what="output"):
    err = rel_err(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def snapshot(*tensors):
    """Copies of the tensors' values and strides, for assert_unchanged."""
    return [None if t is None else (t.detach().clone(), t.stride(), t.storage_offset()) for t in tensors]


def assert_unchanged(saved, tensors):
    """Every tensor still holds exactly its original bits, strides and storage offset."""
    for before, after in zip(saved, tensors):
        if after is None:
            continue
        values, stride, offset = before
        assert after.shape == values.shape and after.stride() == stride and after.storage_offset() == offset
        assert torch.equal(after.detach(), values), "an input tensor was modified"


# Values an activation must treat as torch does: NaN, infinities, the far tails where exp overflows
# (silu(-1e38) is -0, silu(-inf) NaN), its thresholds, zeros of both signs, subnormals.
SPECIAL_VALUES = [
    float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0, 3.5, 6.0, 7.0, 5.0, -5.0, 20.0, -20.0,
    88.5, 89.0, -87.0, -88.0, -88.5, -88.7, -89.0, -100.0, -104.0, -1e38, -3.4e38, 1e38, 3.4e38, 1e-38, -1e-38,
    1e-45, -1e-45,
]

# The absolute error of the CPU vector kernels' erfc (Abramowitz & Stegun 7.1.26), times |z| / 2 in GELU.
ERFC_ABS_ERR = 1.5e-7


def assert_activation_matches_torch(out: torch.Tensor, z: torch.Tensor, activation, tol: float, what: str) -> None:
    """out == act(z) as torch computes it: NaN where torch gives NaN, infinities of the same sign,
    every finite value within `tol` relative (plus the approximate erfc's absolute error for GELU),
    of torch's activation in out's dtype or of its exact value (float64, rounded to that dtype).
    The two differ at the edges of float32: its silu(-89) is -0 (exp overflows) where the value is
    -2e-37, and its gelu(inf) NaN where the value is inf; either is accepted there."""
    native = act64(z.to(out.dtype), activation).double()
    exact = act64(z.double(), activation).to(out.dtype).double()
    got = out.double()
    nan_required, nan_allowed = native.isnan() & exact.isnan(), native.isnan() | exact.isnan()
    assert bool((got.isnan() <= nan_allowed).all()), f"{what}: NaN where torch has none"
    assert bool((nan_required <= got.isnan()).all()), f"{what}: no NaN where torch has one"
    matches = (got == native) | (got == exact)
    infinite = (native.isinf() | exact.isinf()) & ~got.isnan()
    assert bool(matches[infinite].all()), f"{what}: infinities differ"
    finite = native.isfinite() & exact.isfinite()
    slack = tol * exact[finite].abs() + (ERFC_ABS_ERR * z.double()[finite].abs() if activation == "gelu" else 0)
    error = torch.minimum((got[finite] - native[finite]).abs(), (got[finite] - exact[finite]).abs())
    worst = int((error - slack).argmax())
    assert bool((error <= slack).all()), (
        f"{what}: act({z.double()[finite][worst].item()!r}) = {got[finite][worst].item()!r}, torch gives "
        f"{native[finite][worst].item()!r} (exactly {exact[finite][worst].item()!r})")
