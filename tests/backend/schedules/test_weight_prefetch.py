"""The weight prefetch (x86 builds): which kernels get it, that each item fetches the chunk of the weights
the items k places later start on (and nothing else), that results do not change, and that ARM builds are
left alone."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend.schedules import weight_prefetch as wp
from c2f_edge.backend.targets import as_target
from tests.backend.schedules.test_rules import _build, _inputs, _run, _shapes
from tests.fixtures.schedules import ARM64, HOST


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


def _fetched(func, plan):
    """{item: set of weight element offsets its prefetches start at}, every loop of the plan's path run."""
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
    line = next(f for f in loops if f.loop_var.name == "prefetch_line")
    parallel = next(f for f in loops if f.kind == tirx.ForKind.PARALLEL)
    path = [next(f for f in loops if f.loop_var.same_as(p.loop_var)) for p in plan.path]
    strides = np.cumprod([1, *[int(d) for d in reversed(load.source.shape)]])[::-1][1:]
    out = {}
    for item in range(int(parallel.extent)):
        got = out.setdefault(item, set())
        for values in itertools.product(*[range(int(f.extent)) for f in [*path, line]]):
            env = {parallel.loop_var: item, **{f.loop_var: v for f, v in zip([*path, line], values, strict=True)}}
            got.add(sum(int(s) * wp._value(i, env) for s, i in zip(strides, load.indices, strict=True)))
    return out


def test_the_convs_whose_items_walk_large_weights_in_order_get_it(host_kernels):
    """Stages 3 and 4's 1x1 convs, their downsamples and the head's conv; not the split reductions (their
    parallel loop is the sum's), not the classifier, not the small weights of stages 1 and 2."""
    scheduled = _default_scheduled(host_kernels, HOST, split=True)
    plans = {n: p for n, f in scheduled.items() if (p := wp.plan(f)) is not None}
    assert _stage4_fc1(host_kernels) in plans
    assert all(wp._bytes(p.weights) >= wp.MIN_WEIGHT_BYTES for p in plans.values())
    assert all(_shapes(host_kernels[n])[0][2] in (7, 14, 28) and "conv2d" in n for n in plans)
    assert not [n for n, f in scheduled.items() if f.attrs.get("c2f_edge.split_reduction") and n in plans]
    assert not [n for n in plans if "matmul" in n]
    for p in plans.values():
        items, k = int(p.parallel.extent), p.items_per_chunk
        assert items % k == 0 and items // k >= wp.MIN_CHUNKS


def test_items_that_all_read_the_same_weights_are_left_alone(host_kernels, monkeypatch):
    """Stage 1's fc2 tiles pixels outermost (its input outweighs its weights): every item reads every weight,
    so there is no next chunk to fetch, whatever the weights' size."""
    monkeypatch.setattr(wp, "MIN_WEIGHT_BYTES", 0)
    name = next(n for n, f in sorted(host_kernels.items()) if len(_shapes(f)[1]) == 6
                and _shapes(f)[0][2] == 56 and _shapes(f)[0][1] * _shapes(f)[0][4] == 256)
    assert wp.plan(_default_scheduled({name: host_kernels[name]}, HOST)[name]) is None


@pytest.mark.parametrize("schedule", ["default", "rows inside items"])
def test_each_item_fetches_its_share_of_the_chunk_k_items_later(host_kernels, schedule):
    """The k items of chunk c together fetch chunk c + 1, every line of it, and nothing of another chunk; the
    last chunk's items fetch nothing past the weights."""
    name = _stage4_fc1(host_kernels)
    func = (_default_scheduled({name: host_kernels[name]}, HOST)[name] if schedule == "default"
            else _by_rows(host_kernels[name]))
    plan = wp.plan(func)
    assert plan is not None
    fetched = _fetched(wp.with_prefetch(func, plan), plan)
    size, k = wp._elements(plan.weights), plan.items_per_chunk
    chunks = int(plan.parallel.extent) // k
    chunk, line = size // chunks, wp.LINE_BYTES // 4
    for c in range(chunks):
        starts = set().union(*(fetched[i] for i in range(c * k, (c + 1) * k)))
        if c + 1 < chunks:
            assert starts == set(range((c + 1) * chunk, (c + 2) * chunk, line)), (schedule, c)
        else:
            assert max(starts) <= size - line


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
    # the pass applies it on x86 targets, and leaves ARM's kernels as they are
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
