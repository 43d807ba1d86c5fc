"""The weight prefetch (x86 builds): which kernels get it, that each item fetches the chunk of the weights
the items k places later start on (and nothing else), that results do not change, and that ARM builds are
left alone."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend.schedules import weight_prefetch as wp
from c2f_edge.backend.targets import as_target
from tests.backend.schedules.test_rules import _build, _inputs, _run, _shapes
from tests.fixtures.schedules import ARM64, AVX512, HOST


def _default_scheduled(kernels, target, split=False):
    import tvm

    from c2f_edge.backend.schedules import default_schedule
    from c2f_edge.backend.schedules.split_reduction import split_reduction_pass

    mod = tvm.IRModule(dict(kernels))
    with as_target(target):
        if split:
            mod = split_reduction_pass(as_target(target))(mod)
        mod = default_schedule()(mod)
    return {n: mod[n] for n in kernels}


def _stage4_fc1(kernels):
    """The MLP's fc1 of stage 4: 7x7 pixels, 512 -> 2048 channels, 4 MB of weights."""
    return next(n for n, f in sorted(kernels.items()) if "gelu" in n and len(_shapes(f)[1]) == 6
                and _shapes(f)[0][2] == 7 and _shapes(f)[1][0] * _shapes(f)[1][4] == 2048)


def _by_rows(func):
    """Stage 4's fc1 the way a tuning record may schedule it: items over output-block pairs, then a serial
    loop over the rows around the reduction (two loops to step through, not one)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    conv = sch.get_sblock("conv2d_nchwc")
    z, f, y, x, k, rc, ry, rx, ri = sch.get_loops(conv)
    f0, f1 = sch.split(f, [None, 2])
    sch.reorder(f0, y, rc, ry, rx, ri, f1, x, k)
    sch.parallel(sch.fuse(z, f0))
    return sch.mod["main"]


def _stage3_fc2_split(kernels, target):
    """The MLP's fc2 of stage 3 under the split reduction: each core walks its share of the input channels."""
    from c2f_edge.backend.schedules.split_reduction import ATTR

    split = _default_scheduled(kernels, target, split=True)
    return next(f for n, f in sorted(split.items()) if f.attrs.get(ATTR) and _shapes(f)[0][2] == 14)


def _fetched(func, plan):
    """{(parallel iteration, walker iteration): the weight element offsets its prefetches start at}, every
    loop of the plan's path run."""
    import itertools

    import tvm_ffi
    from tvm import tirx

    calls = []
    tvm_ffi.structural_walk(func.body, lambda n: calls.append(n) if type(n).__name__ == "Call"
                            and getattr(n.op, "name", "") == "tirx.address_of" else None)
    (address,) = calls
    load = address.args[0]
    loops = []
    tvm_ffi.structural_walk(func.body, (tirx.For, loops.append), order="pre")

    def same(loop):
        return next(f for f in loops if f.loop_var.same_as(loop.loop_var))

    line = next(f for f in loops if f.loop_var.name == "prefetch_line")
    parallel, walker, path = same(plan.parallel), same(plan.walker), [same(f) for f in plan.path]
    walks = [None] if walker.same_as(parallel) else range(int(walker.extent))
    strides = wp._strides(load.source)
    out = {}
    for t, w in itertools.product(range(int(parallel.extent)), walks):
        got = out.setdefault((t, t if w is None else w), set())
        env = {parallel.loop_var: t, **({} if w is None else {walker.loop_var: w})}
        for values in itertools.product(*[range(int(f.extent)) for f in [*path, line]]):
            env.update({f.loop_var: v for f, v in zip([*path, line], values, strict=True)})
            got.add(sum(s * wp._value(i, env) for s, i in zip(strides, load.indices, strict=True)))
    return out


def test_the_convs_whose_items_walk_large_weights_in_order_get_it(host_kernels):
    """Stages 3 and 4's 1x1 convs (the split fc2s too), their downsamples and the head's conv; not the
    classifier (its rows are the sum's), not the small weights of stages 1 and 2."""
    scheduled = _default_scheduled(host_kernels, HOST, split=True)
    plans = {n: p for n, f in scheduled.items() if (p := wp.plan(f)) is not None}
    assert _stage4_fc1(host_kernels) in plans
    assert all(wp._elements(p.weights) * 4 >= wp.MIN_WEIGHT_BYTES for p in plans.values())
    assert all(_shapes(host_kernels[n])[0][2] in (7, 14, 28) and "conv2d" in n for n in plans)
    split = [n for n, f in scheduled.items() if f.attrs.get("c2f_edge.split_reduction")]
    # the split fc2s: each core walks its own share of the input channels, chunk by chunk of output blocks
    assert all(not plans[n].walker.same_as(plans[n].parallel) for n in split if "conv2d" in n)
    assert len([n for n in split if n in plans]) == 2
    assert not [n for n in plans if "matmul" in n]
    for p in plans.values():
        items, k = int(p.walker.extent), p.items_per_chunk
        assert items % k == 0 and items // k >= wp.MIN_CHUNKS


def test_items_that_all_read_the_same_weights_are_left_alone(host_kernels, monkeypatch):
    """Stage 1's fc2 tiles pixels outermost (its input outweighs its weights): every item reads every weight,
    so there is no next chunk to fetch, whatever the weights' size."""
    monkeypatch.setattr(wp, "MIN_WEIGHT_BYTES", 0)
    name = next(n for n, f in sorted(host_kernels.items()) if len(_shapes(f)[1]) == 6
                and _shapes(f)[0][2] == 56 and _shapes(f)[0][1] * _shapes(f)[0][4] == 256)
    assert wp.plan(_default_scheduled({name: host_kernels[name]}, HOST)[name]) is None


@pytest.mark.parametrize("schedule", ["default", "rows inside items", "split reduction"])
def test_each_item_fetches_its_share_of_the_chunk_k_items_later(host_kernels, avx512_kernels, schedule):
    """The k walker iterations of chunk c together fetch chunk c + 1 (the rows, and of each row the share
    this parallel iteration reads: all of it, or a core's inputs in a split reduction), every line of it
    and nothing else; the last chunk's fetch nothing past the weights."""
    name = _stage4_fc1(host_kernels)
    func = {"default": lambda: _default_scheduled({name: host_kernels[name]}, HOST)[name],
            "rows inside items": lambda: _by_rows(host_kernels[name]),
            # AVX-512's register tile: two output blocks per chunk (AVX2's has one)
            "split reduction": lambda: _stage3_fc2_split(avx512_kernels, AVX512)}[schedule]()
    plan = wp.plan(func)
    assert plan is not None and (plan.walker.same_as(plan.parallel)) == (schedule != "split reduction")
    assert plan.rows == 2 or schedule == "default"  # chunks of several rows: each row's share is placed
    fetched = _fetched(wp.with_prefetch(func, plan), plan)
    size, k, line = wp._elements(plan.weights), plan.items_per_chunk, wp.LINE_BYTES // 4
    row = size // int(plan.weights.shape[0])
    chunks = int(plan.walker.extent) // k
    for t in range(int(plan.parallel.extent)):
        start = plan.offset + t * plan.offset_step
        walks = [t] if plan.walker.same_as(plan.parallel) else range(int(plan.walker.extent))
        mine = {w: fetched[(t, w)] for w in walks}
        for c in {w // k for w in walks}:
            starts = set().union(*(mine[w] for w in range(c * k, (c + 1) * k) if w in mine))
            if c + 1 < chunks and len(walks) > 1:
                rows = range((c + 1) * plan.rows, (c + 2) * plan.rows)
                assert starts == {r * row + start + i for r in rows for i in range(0, plan.segment, line)}, (t, c)
            assert max(starts) <= size - line
    if plan.walker.same_as(plan.parallel):  # items: checked chunk by chunk over all parallel iterations
        for c in range(chunks - 1):
            starts = set().union(*(fetched[(i, i)] for i in range(c * k, (c + 1) * k)))
            rows = range((c + 1) * plan.rows, (c + 2) * plan.rows)
            assert starts == {r * row + i for r in rows for i in range(0, row, line)}, c
    else:
        assert plan.offset_step == plan.segment and plan.segment * int(plan.parallel.extent) == row


def test_results_do_not_change_and_the_code_prefetches(host_kernels):
    import tvm
    import tvm_ffi

    name = _stage4_fc1(host_kernels)
    func = _default_scheduled({name: host_kernels[name]}, HOST)[name]
    fetching = wp.with_prefetch(func, wp.plan(func))
    inputs = _inputs(func)
    np.testing.assert_array_equal(_run(fetching, HOST, [a.copy() for a in inputs]),
                                  _run(func, HOST, [a.copy() for a in inputs]))
    assert "prefetcht1" in _build(fetching, HOST).inspect_source("asm")
    # the pass applies the same on an x86 target
    out = wp.weight_prefetch_pass(as_target(HOST))(tvm.IRModule({name: func}))
    assert tvm_ffi.structural_equal(out[name], fetching)


def test_arm_builds_are_left_alone(arm64_kernels):
    """The emulated boards' cycle model would count the prefetches and cannot credit them; no board has
    timed them."""
    import tvm
    import tvm_ffi

    name = _stage4_fc1(arm64_kernels)
    func = _default_scheduled({name: arm64_kernels[name]}, ARM64)[name]
    assert wp.plan(func) is not None  # it would fit
    out = wp.weight_prefetch_pass(as_target(ARM64))(tvm.IRModule({name: func}))
    assert tvm_ffi.structural_equal(out[name], func)
