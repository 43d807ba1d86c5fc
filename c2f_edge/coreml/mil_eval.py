"""A small NumPy interpreter for the MIL op set of Conv2Former, to check saved .mlpackages on Linux.

Two modes:
- "fp32": every op in float32 (fp16 weights are widened), to compare a program against PyTorch fp32.
- "fp16": emulates fp16 compute: each op runs in float32 on its (already fp16) inputs, and its output is
  rounded to fp16 -- unless the program itself declares that op's output fp32 in a mixed-precision program
  (e.g. the LayerNorm variance path we keep in fp32). A program with no fp16 at all is rounded everywhere,
  as on the Neural Engine. Real devices may accumulate long sums in fp16; this emulation accumulates in
  fp32 and rounds once per op, so it is a lower bound on the device's rounding error.

An op the interpreter does not know raises `UnsupportedError` naming it: never a silent skip.
Compressed weights (`constexpr_*`) are dequantized by coremltools' own value inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from c2f_edge.core.errors import UnsupportedError

MODES = ("fp32", "fp16")

OPS: dict[str, Callable] = {}


def register(*names: str):
    """Add an op implementation: `fn(op, **inputs) -> np.ndarray`, inputs as NumPy values."""
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def supported_ops() -> list[str]:
    return sorted(OPS) + ["const", "constexpr_*"]


# ---------------------------------------------------------------------------------------------------
# Ops

def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _axes(axes, ndim):
    return tuple(int(a) % ndim for a in np.atleast_1d(axes))


def _pads(op, pad_type, pad, x_hw, k_hw, strides, dilations):
    pad_type = str(pad_type)
    if pad_type == "valid":
        return [0, 0, 0, 0]
    if pad_type == "custom":
        return [int(p) for p in pad]
    if pad_type in ("same", "same_lower"):
        out = []
        for n, k, s, d in zip(x_hw, k_hw, strides, dilations):
            o = -(-n // s)
            total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
            lo = total // 2 if pad_type == "same" else total - total // 2
            out += [lo, total - lo]
        return out
    raise UnsupportedError(f"op '{op.name}' (conv): pad_type '{pad_type}' is not supported by the interpreter",
                           hint="add it to c2f_edge/coreml/mil_eval.py")


@register("conv")
def conv(op, x, weight, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1,
         bias=None):
    x, w = _f32(x), _f32(weight)
    if x.ndim != 4:
        raise UnsupportedError(f"op '{op.name}' (conv): only 2-D convolution is supported, got rank {x.ndim}")
    groups = int(groups)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilations)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    t, b, lft, r = _pads(op, pad_type, pad, (h, wd), (kh, kw), (sh, sw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (lft, r))) if (t or b or lft or r) else x
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1

    def window(arr, i, j):
        return arr[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]

    if groups == c and cg == 1 and o == c:
        # Depthwise: a sum of shifted, per-channel scaled copies.
        out = np.zeros((n, c, oh, ow), np.float32)
        for i in range(kh):
            for j in range(kw):
                out += window(xp, i, j) * w[None, :, 0, i, j, None, None]
    else:
        og = o // groups
        out = np.empty((n, o, oh, ow), np.float32)
        for g in range(groups):
            xg = xp[:, g * cg:(g + 1) * cg]
            # im2col: (n, cg*kh*kw, oh*ow), ordered like weight.reshape(o, cg*kh*kw)
            cols = np.stack([window(xg, i, j) for i in range(kh) for j in range(kw)], axis=2)
            cols = cols.reshape(n, cg * kh * kw, oh * ow)
            wg = w[g * og:(g + 1) * og].reshape(og, cg * kh * kw)
            out[:, g * og:(g + 1) * og] = np.matmul(wg, cols).reshape(n, og, oh, ow)
    if bias is not None:
        out += _f32(bias)[None, :, None, None]
    return out


@register("gelu")
def gelu(op, x, mode="EXACT"):
    x = _f32(x)
    mode = str(mode)
    if mode == "EXACT":
        from scipy.special import erf

        return (0.5 * x * (1.0 + erf(x / np.sqrt(np.float32(2.0))))).astype(np.float32)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise UnsupportedError(f"op '{op.name}' (gelu): mode '{mode}' is not supported by the interpreter")


@register("reduce_mean")
def reduce_mean(op, x, axes=None, keep_dims=False):
    x = _f32(x)
    ax = None if axes is None else _axes(axes, x.ndim)
    return np.mean(x, axis=ax, keepdims=bool(keep_dims), dtype=np.float32)


@register("pow")
def pow_(op, x, y):
    return np.power(_f32(x), _f32(y))


@register("sqrt")
def sqrt(op, x):
    return np.sqrt(_f32(x))


@register("rsqrt")
def rsqrt(op, x, epsilon=1e-12):
    return 1.0 / np.sqrt(_f32(x) + np.float32(epsilon))


@register("real_div")
def real_div(op, x, y):
    return _f32(x) / _f32(y)


@register("add")
def add(op, x, y):
    return _f32(x) + _f32(y)


@register("sub")
def sub(op, x, y):
    return _f32(x) - _f32(y)


@register("mul")
def mul(op, x, y):
    return _f32(x) * _f32(y)


@register("batch_norm")
def batch_norm(op, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f32(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = 1.0 / np.sqrt(_f32(variance) + np.float32(epsilon))
    if gamma is not None:
        scale = scale * _f32(gamma)
    out = (x - _f32(mean).reshape(shape)) * scale.reshape(shape)
    if beta is not None:
        out += _f32(beta).reshape(shape)
    return out


@register("layer_norm")
def layer_norm(op, x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = _f32(x)
    ax = _axes(axes, x.ndim)
    u = x.mean(axis=ax, keepdims=True)
    var = ((x - u) ** 2).mean(axis=ax, keepdims=True)
    out = (x - u) / np.sqrt(var + np.float32(epsilon))
    if gamma is not None:
        out = out * _f32(gamma)
    if beta is not None:
        out = out + _f32(beta)
    return out


@register("linear")
def linear(op, x, weight, bias=None):
    out = np.matmul(_f32(x), _f32(weight).T)
    return out + _f32(bias) if bias is not None else out


_CAST = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "bool": np.bool_}


@register("cast")
def cast(op, x, dtype):
    dt = _CAST.get(str(dtype))
    if dt is None:
        raise UnsupportedError(f"op '{op.name}' (cast): dtype '{dtype}' is not supported by the interpreter")
    return np.asarray(x).astype(dt)


@register("reshape")
def reshape(op, x, shape):
    return np.reshape(x, [int(s) for s in shape])


@register("transpose")
def transpose(op, x, perm):
    return np.transpose(x, [int(p) for p in perm])


@register("squeeze")
def squeeze(op, x, axes=None):
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=_axes(axes, np.ndim(x)))


@register("expand_dims")
def expand_dims(op, x, axes):
    out = np.asarray(x)
    for a in sorted(int(a) for a in np.atleast_1d(axes)):
        out = np.expand_dims(out, a if a >= 0 else out.ndim + a + 1)
    return out


@register("identity")
def identity(op, x):
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------------
# Interpreter

def _declared(var) -> str | None:
    from coremltools.converters.mil.mil import types

    try:
        return types.builtin_to_string(var.dtype)
    except (AttributeError, KeyError, TypeError):  # a var with no scalar/tensor dtype (e.g. a list)
        return None


def _const_value(op) -> np.ndarray:
    if op.op_type == "const":
        val = op.outputs[0].val
    else:
        # coremltools' own dequantization of compressed weights (lut, affine, blockwise, sparse).
        val = op.materialized_val_inference()
        if isinstance(val, tuple):
            val = val[0]
    if val is None:
        raise UnsupportedError(f"op '{op.name}' ({op.op_type}): its value could not be materialized",
                               hint="the package may be corrupt or use a compression this coremltools cannot read")
    return val


class Interpreter:
    """Runs one MIL function on NumPy inputs. Build once per program, call `run` per input."""

    def __init__(self, program, mode: str = "fp32", function: str = "main"):
        if mode not in MODES:
            raise UnsupportedError(f"unknown interpreter mode '{mode}'", hint=f"use one of {', '.join(MODES)}")
        self.mode = mode
        self.fn = program.functions[function]
        self.ops = list(self.fn.operations)
        unknown = sorted({o.op_type for o in self.ops
                          if o.op_type not in OPS and o.op_type != "const" and not o.op_type.startswith("constexpr_")})
        if unknown:
            raise UnsupportedError(f"the MIL interpreter does not know op(s): {', '.join(unknown)}",
                                   hint="add them to c2f_edge/coreml/mil_eval.py (OPS registry)")
        has_fp16 = any(_declared(v) == "fp16" for o in self.ops if o.op_type != "const" for v in o.outputs)
        self._round: dict[str, bool] = {}
        for o in self.ops:
            for v in o.outputs:
                d = _declared(v)
                # fp16 mode rounds float results, except where a mixed-precision program asks for fp32.
                self._round[v.name] = mode == "fp16" and d in ("fp16", "fp32") and not (has_fp16 and d == "fp32")
        self._consts = {}
        for o in self.ops:
            if o.op_type == "const" or o.op_type.startswith("constexpr_"):
                self._consts[o.outputs[0].name] = _const_value(o)
        # Free each activation after its last use, unless the caller keeps it.
        self._last_use: dict[str, int] = {}
        for i, o in enumerate(self.ops):
            for v in self._input_vars(o):
                self._last_use[v.name] = i
        self.output_names = [v.name for v in self.fn.outputs]
        self.input_names = list(self.fn.inputs)

    @staticmethod
    def _input_vars(op):
        for v in op.inputs.values():
            yield from (v if isinstance(v, (list, tuple)) else (v,))

    def _value(self, env, v):
        if v.name in env:
            return env[v.name]
        if v.name in self._consts:
            return self._consts[v.name]
        if v.val is not None:  # an inline constant
            return v.val
        raise UnsupportedError(f"MIL var '{v.name}' has no value (is the program well-formed?)")

    def run(self, inputs: dict[str, np.ndarray], keep: bool | Iterable[str] = False
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Returns (outputs by name, kept intermediates by MIL var name)."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise UnsupportedError(f"missing program input(s): {', '.join(missing)}",
                                   hint=f"the program takes {', '.join(self.input_names)}")
        keep_all = keep is True
        keep_set = set() if keep is False or keep_all else set(keep)
        env: dict[str, np.ndarray] = {}
        for name in self.input_names:
            v = np.asarray(inputs[name], dtype=np.float32)
            env[name] = self._rounded(name, v)
        kept: dict[str, np.ndarray] = {}
        for i, op in enumerate(self.ops):
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                continue
            args = {}
            for k, v in op.inputs.items():
                args[k] = ([self._value(env, e) for e in v] if isinstance(v, (list, tuple))
                           else self._value(env, v))
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                out = OPS[op.op_type](op, **args)
            outs = out if isinstance(out, tuple) else (out,)
            for var, val in zip(op.outputs, outs):
                val = np.asarray(val)
                if val.dtype.kind == "f":
                    val = self._rounded(var.name, val.astype(np.float32, copy=False))
                env[var.name] = val
                if keep_all or var.name in keep_set:
                    kept[var.name] = val
            for v in self._input_vars(op):
                if self._last_use.get(v.name) == i and v.name not in self.output_names:
                    env.pop(v.name, None)
        outputs = {n: np.asarray(env[n], dtype=np.float32) for n in self.output_names}
        return outputs, kept

    def _rounded(self, name: str, val: np.ndarray) -> np.ndarray:
        if self._round.get(name, self.mode == "fp16"):
            with np.errstate(over="ignore"):
                return val.astype(np.float16).astype(np.float32)
        return val
