"""Weight prefetch (x86 CPU builds): a kernel that walks a large weight operand chunk by chunk gets each
step of the walk to prefetch, into L2, its share of the next chunk, a few cache lines per step of its
reduction.

Why: inside the model, a kernel's weights come from L3 or DRAM (Conv2Former-N reads 60 MB of weights per
image through 2 MB of L2 per core). A tile's first pass over its chunk of the weights waits for memory at
the rate its FMAs would consume them; the following passes read the chunk from L2. Prefetching the next
chunk meanwhile overlaps the two. On the rocketlake Xeon the 1x1 convs of stages 3 and 4 and the head's
conv lost about 1.3 ms less in the model's sequence (stage 3's fc1 3.16 -> 2.84 ms, its time alone), and
the model ran 4-5% faster. Alone, with warm caches, nothing is gained; stage 3's split fc2 runs 0.3 ms
slower alone (8 calls), for 0.1 ms less in the model.

Which kernels: any schedule (default or tuned) with at least MIN_WEIGHT_BYTES of weights whose walker
steps through the weights' output blocks in order, k iterations per chunk. The walker is the outermost
parallel loop (items), or in a split reduction the loop over output blocks inside each core's share, which
reads only that core's part of each row. A kernel whose items all read the same weights (stages 1 and 2:
the activations outweigh the weights) is left alone, as is the classifier (its rows are the sum's).

Not on ARM yet: the prefetches add instructions, which the cycle model of the emulated boards counts and
cannot credit, and no board has timed it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from c2f_edge.backend.schedules.base import buffer_bytes

LINE_BYTES = 64
MIN_WEIGHT_BYTES = 256 * 1024
MIN_CHUNKS = 8  # each core walks several chunks in a row (items are split between cores in order)
LOCALITY = 2  # llvm.prefetch's locality: 2 is prefetcht1 on x86 (L2 and outward)


@dataclass
class Plan:
    """Where a kernel's prefetches go and what they fetch. A chunk is `rows` consecutive rows of the weights'
    outer axis (output blocks); of each row, a parallel iteration p reads `segment` elements from
    offset + p * offset_step (the whole row, or in a split reduction its core's share of the inputs)."""

    parallel: object  # the outermost parallel For
    walker: object  # the For stepping through the chunks: `parallel` itself, or a loop inside it
    weights: object  # the weight Buffer
    items_per_chunk: int  # k: consecutive walker iterations that share one chunk
    rows: int
    offset: int
    offset_step: int
    segment: int
    path: list  # the For loops from below `walker` down to the reduction's outermost loop, inclusive


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
    if parallel is None or any(type(f.extent).__name__ != "IntImm" for f in fors):
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
            if not any(w.same_as(p) or w.data.same_as(p) for p in params) or buffer_bytes(load) < MIN_WEIGHT_BYTES:
                continue
            if (found := _plan_load(parallel, fors, load, binding, reduce_vars)) is not None:
                return found
    return None


def _plan_load(parallel, fors, load, binding, reduce_vars) -> Plan | None:
    import tvm_ffi
    from tvm import tirx

    w = load.source
    outer = {v for e in _vars(load.indices[0]) for v in _vars(binding[e])}
    under = [parallel]
    tvm_ffi.structural_walk(parallel.body, (tirx.For, under.append), order="pre")
    walker = next((f for f in under if f.loop_var in outer), None)
    if walker is None:
        return None
    chunks = _chunks(walker, load.indices[0], binding, int(w.shape[0]))
    reduce_loops = {v for r in reduce_vars for v in _vars(binding[r])}
    path = _path_to(walker.body, lambda f: f.loop_var in reduce_loops)
    if chunks is None or not path:
        return None
    k, rows = chunks
    row = _elements(w) // int(w.shape[0])

    def row_offset(env):
        block_env = {v: _value(e, env) for v, e in binding.items()}
        return sum(_value(i, block_env) * st for i, st in zip(load.indices[1:], _strides(w)[1:], strict=True))

    last = {f.loop_var: int(f.extent) - 1 for f in fors if not f.same_as(parallel) and not f.same_as(walker)}
    starts = [row_offset({parallel.loop_var: p}) for p in range(int(parallel.extent))]
    step = starts[1] - starts[0] if len(starts) > 1 else 0
    segment = row_offset({**last, parallel.loop_var: 0}) + 1 - starts[0]
    if any(s != starts[0] + p * step for p, s in enumerate(starts)) or \
            starts[-1] + segment > row or (walker.same_as(parallel) and step):
        return None
    return Plan(parallel, walker, w, k, rows, starts[0], step, segment, path)


def with_prefetch(func, p: Plan):
    """`func` with the plan's prefetches at the top of the reduction's outermost loop. The k walker
    iterations of chunk c share chunk c + 1's cache lines between them, each a few per step it takes
    through the plan's loops."""
    import tvm_ffi
    from tvm import tirx

    index = str(p.parallel.extent.ty)

    def const(v):
        return tirx.const(v, index)

    size, k = _elements(p.weights), p.items_per_chunk
    row = size // int(p.weights.shape[0])
    line = LINE_BYTES // _elem_bytes(p.weights)  # elements
    per_row = math.ceil(p.segment / line)  # lines
    lines = p.rows * per_row  # per chunk
    share = math.ceil(lines / k)  # per walker iteration
    steps, step = 1, const(0)
    for loop in p.path:
        steps *= int(loop.extent)
        step = step * loop.extent + loop.loop_var - loop.min
    n = math.ceil(share / steps)  # per step
    u = tirx.Var("prefetch_line", index)
    walk = p.walker.loop_var - p.walker.min
    mine = tirx.min(walk % k * share + tirx.min(step * n + u, const(share - 1)), const(lines - 1))
    start = p.offset + (p.parallel.loop_var - p.parallel.min) * p.offset_step if p.offset_step else const(p.offset)
    flat = (walk // k + 1) * (p.rows * row) + mine // per_row * row + start + mine % per_row * line
    flat = tirx.min(flat, const(size - line))
    call = tirx.call_llvm_intrin("void", "llvm.prefetch.p0", tirx.address_of(_load_at(p.weights, flat)),
                                 tirx.const(0, "int32"), tirx.const(LOCALITY, "int32"), tirx.const(1, "int32"))
    fetch = tirx.For(u, const(0), const(n), tirx.ForKind.UNROLLED, tirx.Evaluate(call))
    r = p.path[-1]
    new = tirx.For(r.loop_var, r.min, r.extent, r.kind, tirx.SeqStmt([fetch, r.body]), r.thread_binding,
                   r.annotations)
    body = tvm_ffi.structural_map(func.body, (tirx.For, lambda f: new if f.same_as(r) else f), order="pre")
    return func.with_body(body)


def _chunks(walker, index, binding, rows_total: int) -> tuple[int, int] | None:
    """(k, rows) when the walker's iterations read the weights' outer axis in order, k iterations per chunk
    of `rows` rows, the chunks covering the axis once; None otherwise (every other loop at its first
    iteration)."""
    items = int(walker.extent)
    try:
        first = [_value(index, {v: _value(e, {walker.loop_var: i}) for v, e in binding.items()})
                 for i in range(items)]
    except (KeyError, TypeError):
        return None
    k = next((i for i, v in enumerate(first) if v != first[0]), None)
    if k is None or items % k or first[0] != 0:
        return None
    runs = first[::k]
    if len(runs) < MIN_CHUNKS:  # (a parallel walker) item i + k would be another core's
        return None
    rows = runs[1] - runs[0]
    if rows <= 0 or any(first[i] != runs[i // k] for i in range(items)) or \
            any(b - a != rows for a, b in itertools.pairwise(runs)) or len(runs) * rows != rows_total:
        return None
    return k, rows


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

    idx = [flat // st % int(d) if i else flat // st for i, (st, d) in enumerate(zip(_strides(w), w.shape, strict=True))]
    return tirx.BufferLoad(w, idx)


def _strides(w) -> list[int]:
    """Row-major strides of w's axes, in elements."""
    out, stride = [], _elements(w)
    for d in w.shape:
        stride //= int(d)
        out.append(stride)
    return out


def _elements(w) -> int:
    return math.prod(int(d) for d in w.shape)


def _elem_bytes(w) -> int:
    return max(1, w.dtype.bits // 8)
