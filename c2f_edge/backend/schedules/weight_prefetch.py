"""Weight prefetch (x86 CPU builds): a kernel whose parallel items walk a large weight operand in order
gets each item to prefetch, into L2, the slice of the weights that the items one weight chunk later start
on, a few cache lines per step of its reduction.

Why: inside the model, a kernel's weights come from L3 or DRAM (Conv2Former-N reads 60 MB of weights per
image through 2 MB of L2 per core). A tile's first pass over its chunk of the weights waits for memory at
the rate its FMAs would consume them; the following passes read the chunk from L2. Prefetching the next
chunk meanwhile overlaps the two. On the rocketlake Xeon the 1x1 convs of stages 3 and 4 and the head's
conv lost 1.0 ms less in the model's sequence (stage 3's fc1 3.16 -> 2.84 ms, its time alone), and the
model ran 3-4% faster; alone, with warm caches, nothing changes.

Which kernels: any schedule (default or tuned) whose outermost parallel loop steps through the weights'
output blocks in order, k items per chunk, with at least MIN_WEIGHT_BYTES of weights. A kernel whose items
all read the same weights (stages 1 and 2: the activations outweigh the weights) is left alone, as are
the split reductions (their parallel loop is the reduction's).

Not on ARM yet: the prefetches add instructions, which the cycle model of the emulated boards counts and
cannot credit, and no board has timed it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

LINE_BYTES = 64
MIN_WEIGHT_BYTES = 256 * 1024
MIN_CHUNKS = 8  # each core walks several chunks in a row (items are split between cores in order)
LOCALITY = 2  # llvm.prefetch's locality: 2 is prefetcht1 on x86 (L2 and outward)


@dataclass
class Plan:
    """Where a kernel's prefetches go and what they fetch."""

    parallel: object  # the outermost parallel For
    weights: object  # the weight Buffer
    items_per_chunk: int  # k: consecutive parallel items that share one chunk of the weights
    path: list  # the For loops from below `parallel` down to the reduction's outermost loop, inclusive


def weight_prefetch_pass(target):
    """The pass (after the schedules): prefetches into every kernel `plan` fits, on x86 targets."""
    import tvm
    from tvm import tirx

    from c2f_edge.backend.schedules.cpu_spec import target_triple

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_weight_prefetch")
    def _pass(mod, _ctx):
        if not target_triple(target).startswith(("x86_64", "i686")):
            return mod
        for gv, func in list(mod.functions.items()):
            if isinstance(func, tirx.PrimFunc) and (p := plan(func)) is not None:
                mod[gv] = with_prefetch(func, p)
        return mod

    return _pass


def plan(func) -> Plan | None:
    """The kernel's prefetch plan, or None where it does not fit (see the module docstring)."""
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir import SBlockRealize

    fors = []
    tvm_ffi.structural_walk(func.body, (tirx.For, fors.append), order="pre")
    parallel = next((f for f in fors if f.kind == tirx.ForKind.PARALLEL), None)
    if parallel is None or type(parallel.extent).__name__ != "IntImm":
        return None
    realizes = []
    tvm_ffi.structural_walk(parallel.body, (SBlockRealize, realizes.append), order="pre")
    params = list(func.params)
    for realize in realizes:
        block = realize.block
        reduce_vars = [iv.var for iv in block.iter_vars if int(iv.iter_type) == 2]  # CommReduce
        if not reduce_vars:
            continue
        binding = dict(zip([iv.var for iv in block.iter_vars], realize.iter_values, strict=True))
        spatial = {iv.var for iv in block.iter_vars if int(iv.iter_type) == 0}  # DataPar
        for load in _loads(block.body):
            w = load.source
            if not (set(_vars(load.indices[0])) <= spatial):  # its outer axis: the output's, not the sum's
                continue
            if not any(w.same_as(p) or w.data.same_as(p) for p in params) or _bytes(w) < MIN_WEIGHT_BYTES:
                continue
            k = _items_per_chunk(parallel, load.indices[0], binding, w)
            reduce_loops = {v for r in reduce_vars for v in _vars(binding[r])}
            path = _path_to(parallel.body, lambda f, loops=reduce_loops: f.loop_var in loops)
            if k is not None and path:
                return Plan(parallel, w, k, path)
    return None


def with_prefetch(func, p: Plan):
    """`func` with the plan's prefetches at the top of the reduction's outermost loop. The k items of chunk c
    share chunk c + 1's cache lines between them, each a few per step it takes through the plan's loops."""
    import tvm_ffi
    from tvm import tirx

    index = str(p.parallel.extent.ty)

    def const(v):
        return tirx.const(v, index)

    size, k = _elements(p.weights), p.items_per_chunk
    chunk = size // (int(p.parallel.extent) // k)  # elements
    line = LINE_BYTES // _elem_bytes(p.weights)  # elements
    lines = math.ceil(chunk / line)  # per chunk
    share = math.ceil(lines / k)  # per item
    steps, step = 1, const(0)
    for loop in p.path:
        steps *= int(loop.extent)
        step = step * loop.extent + loop.loop_var - loop.min
    n = math.ceil(share / steps)  # per step
    u = tirx.Var("prefetch_line", index)
    item = p.parallel.loop_var - p.parallel.min
    mine = tirx.min(item % k * share + tirx.min(step * n + u, const(share - 1)), const(lines - 1))
    flat = tirx.min((item // k + 1) * chunk + mine * line, const(size - line))
    call = tirx.call_llvm_intrin("void", "llvm.prefetch.p0", tirx.address_of(_load_at(p.weights, flat)),
                                 tirx.const(0, "int32"), tirx.const(LOCALITY, "int32"), tirx.const(1, "int32"))
    fetch = tirx.For(u, const(0), const(n), tirx.ForKind.UNROLLED, tirx.Evaluate(call))
    r = p.path[-1]
    new = tirx.For(r.loop_var, r.min, r.extent, r.kind, tirx.SeqStmt([fetch, r.body]), r.thread_binding,
                   r.annotations)
    body = tvm_ffi.structural_map(func.body, (tirx.For, lambda f: new if f.same_as(r) else f), order="pre")
    return func.with_body(body)


def _items_per_chunk(parallel, index, binding, w) -> int | None:
    """k when the parallel items read the weights' outer axis in order, k items per chunk of f blocks that
    together cover the axis exactly once; None otherwise (every other loop at its first iteration)."""
    items = int(parallel.extent)
    try:
        first = [_value(index, {v: _value(e, {parallel.loop_var: i}) for v, e in binding.items()})
                 for i in range(items)]
    except (KeyError, TypeError):
        return None
    k = next((i for i, v in enumerate(first) if v != first[0]), None)
    if k is None or items % k or first[0] != 0:
        return None
    runs = first[::k]
    if len(runs) < MIN_CHUNKS:  # item i + k would be another core's
        return None
    f = runs[1] - runs[0]
    if f <= 0 or any(first[i] != runs[i // k] for i in range(items)) or \
            any(b - a != f for a, b in itertools.pairwise(runs)) or len(runs) * f != int(w.shape[0]):
        return None
    return k


_OPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
        "FloorDiv": lambda a, b: a // b, "FloorMod": lambda a, b: a % b, "Min": min, "Max": max}


def _value(expr, env: dict) -> int:
    """An integer index expression's value, every variable not in `env` at 0 (KeyError: not one)."""
    kind = type(expr).__name__
    if kind == "IntImm":
        return int(expr.value)
    if kind == "Var":
        return env.get(expr, 0)
    if kind == "Cast":
        return _value(expr.value, env)
    return _OPS[kind](_value(expr.a, env), _value(expr.b, env))


def _vars(expr) -> list:
    import tvm_ffi
    from tvm import tirx

    out = []
    tvm_ffi.structural_walk(expr, (tirx.Var, out.append))
    return out


def _loads(stmt) -> list:
    import tvm_ffi
    from tvm.ir.expr import TensorLoad

    out = []
    tvm_ffi.structural_walk(stmt, (TensorLoad, out.append))
    return out


def _path_to(stmt, wanted) -> list | None:
    """The For loops from `stmt` down to the first (outermost) For that `wanted` accepts."""
    from tvm import tirx
    from tvm.s_tir import SBlock, SBlockRealize

    if isinstance(stmt, tirx.For):
        if wanted(stmt):
            return [stmt]
        below = _path_to(stmt.body, wanted)
        return [stmt, *below] if below else None
    if isinstance(stmt, tirx.SeqStmt):
        return next((p for s in stmt.seq if (p := _path_to(s, wanted))), None)
    if isinstance(stmt, SBlockRealize):
        return _path_to(stmt.block, wanted)
    if isinstance(stmt, SBlock) or hasattr(stmt, "body"):
        return _path_to(stmt.body, wanted)
    return None


def _load_at(w, flat):
    """w[...] at row-major element offset `flat`."""
    from tvm import tirx

    idx, stride = [], _elements(w)
    for dim in w.shape:
        stride //= int(dim)
        idx.append(flat // stride % int(dim) if idx else flat // stride)
    return tirx.BufferLoad(w, idx)


def _elements(w) -> int:
    n = 1
    for d in w.shape:
        n *= int(d)
    return n


def _elem_bytes(w) -> int:
    from tvm import DataType

    return DataType(str(w.dtype)).bits // 8


def _bytes(w) -> int:
    return _elements(w) * _elem_bytes(w)
