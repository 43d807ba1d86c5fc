"""Default CPU schedules: every kernel of the model gets one, each one computes what the
unscheduled kernel computes (with the tile shapes of x86 and of both ARM targets), and a kernel a
tuning record already scheduled is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend import schedules
from c2f_edge.backend.schedules import BlockedNorm, ChannelNorm, CpuSpec, TiledReduction, cpu_spec
from c2f_edge.backend.schedules.base import vector_factor
from c2f_edge.backend.targets import as_target
from tests.fixtures.schedules import ARM64, ARMV7, HOST


def _shapes(func):
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return [tuple(int(d) for d in a.shape) for a in ArgInfo.from_prim_func(func)]


def _pick(kernels, pred):
    for name, f in sorted(kernels.items()):
        if pred(name, _shapes(f)):
            return name
    raise AssertionError("no such kernel in the model")


KINDS = {
    # one representative per operator family of Conv2Former-N, activations blocked (backend/passes/block_channels.py):
    # dense conv weights [O/b, I/b, kh, kw, b, b], depthwise [C/b, kh, kw, b], the stem's [O/b, 3, kh, kw, b]
    "1x1 conv + GELU": lambda n, s: "gelu" in n and len(s[1]) == 6 and s[1][2:4] == (1, 1),
    "1x1 conv + residual": lambda n, s: len(s[1]) == 6 and s[1][2:4] == (1, 1) and len(s) == 5,
    "strided 2x2 conv": lambda n, s: len(s[1]) == 6 and s[1][2:4] == (2, 2),
    "stem 3x3 conv": lambda n, s: len(s[1]) == 5 and s[1][2:4] == (3, 3) and s[0][1] == 3,
    "blocked 3x3 conv": lambda n, s: len(s[1]) == 6 and s[1][2:4] == (3, 3),  # the stem's second
    "depthwise 11x11 * v": lambda n, s: len(s[1]) == 4 and s[1][1:3] == (11, 11) and "multiply" in n,
    "depthwise 3x3 + GELU + residual": lambda n, s: len(s[1]) == 4 and s[1][1:3] == (3, 3),
    # 56x56x256 in: read once, pixel tiles outer; 64 out
    "1x1 conv from a 3 MB activation": lambda n, s: len(s[1]) == 6 and s[1][2:4] == (1, 1)
    and len(s[0]) == 5 and s[0][1] * s[0][4] == 256 and s[0][2] == 56,
    # stage 4: 7-pixel rows, 2048 channels in (the MLP's fc2 + residual)
    "1x1 conv on 7-pixel rows": lambda n, s: len(s[1]) == 6 and s[1][2:4] == (1, 1) and s[0][2] == 7
    and s[0][1] * s[0][4] == 2048,
    "channels-first LayerNorm": lambda n, s: n.startswith("channel_norm"),
    "global mean": lambda n, s: n.startswith("mean"),
    "head matmul": lambda n, s: "matmul" in n,
}


def _build(func, target):
    import tvm

    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=as_target(target))


def _run(func, target, inputs):
    import tvm

    lib = _build(func, target)
    args = [tvm.runtime.tensor(a) for a in inputs]
    lib["main"](*args)
    return args[-1].numpy()


def _inputs(func, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype("float32") for s in _shapes(func)]


def test_cpu_spec_reads_lanes_and_registers_from_the_target():
    assert cpu_spec(as_target(HOST)) == CpuSpec(lanes=8, registers=16)  # AVX2
    assert cpu_spec(as_target({"kind": "llvm", "mcpu": "skylake-avx512"})) == CpuSpec(lanes=16, registers=32)
    assert cpu_spec(as_target(ARM64)) == CpuSpec(lanes=4, registers=32)  # NEON, 32 v-registers
    assert cpu_spec(as_target(ARMV7)) == CpuSpec(lanes=4, registers=16)  # NEON, 16 q-registers
    # the lanes follow the kernel's dtype: a NEON register holds 8 fp16 values
    assert cpu_spec(as_target(ARM64), "float16") == CpuSpec(lanes=8, registers=32)
    assert cpu_spec(as_target({"kind": "llvm", "mcpu": "skylake-avx512"}), "float16").lanes == 32


def test_every_kernel_of_the_model_gets_a_parallel_schedule(host_kernels):
    import tvm

    target = as_target(HOST)
    mod = tvm.IRModule({n: f.with_attr("target", target) for n, f in host_kernels.items()})
    with target:
        out = schedules.default_schedule()(mod)
    unscheduled = [n for n in host_kernels if not out[n].attrs.get("tirx.is_scheduled")]
    assert not unscheduled
    serial = [n for n in host_kernels if "T.parallel" not in out[n].script()]
    assert not serial, f"kernels left on one thread: {serial}"
    # Every conv and matmul takes the tiled path: a vectorized register tile, not the fallback.
    tiled = [n for n in host_kernels if "conv" in n or "matmul" in n]
    assert len(tiled) >= 30
    for n in tiled:
        assert schedules.schedule_func(host_kernels[n], target) is not None
        assert TiledReduction().apply(host_kernels[n], target, False) is not None, n
        assert "T.vectorized" in out[n].script(), n


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_default_schedule_computes_what_the_kernel_computes(host_kernels, kind):
    name = _pick(host_kernels, KINDS[kind])
    func = host_kernels[name]
    sch = schedules.schedule_func(func, as_target(HOST))
    assert sch is not None
    inputs = _inputs(func)
    want = _run(func, HOST, [a.copy() for a in inputs])
    got = _run(sch.mod["main"], HOST, [a.copy() for a in inputs])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("spec", [CpuSpec(lanes=4, registers=32), CpuSpec(lanes=4, registers=16)],
                         ids=["arm64-tiles", "armv7-tiles"])
@pytest.mark.parametrize("kind", ["1x1 conv + GELU", "strided 2x2 conv", "depthwise 11x11 * v",
                                  "1x1 conv from a 3 MB activation", "1x1 conv on 7-pixel rows",
                                  "depthwise 3x3 + GELU + residual", "channels-first LayerNorm"])
def test_arm_tile_shapes_compute_the_same(arm64_kernels, spec, kind):
    """The ARM builds' kernels (weights packed by 4) with the ARM tile shapes, run here on x86: this checks
    the schedule; the ARM code generator itself is checked by the emulated board (test_emulator)."""
    from tvm import s_tir

    name = _pick(arm64_kernels, KINDS[kind])
    func = arm64_kernels[name]
    sch = s_tir.Schedule(func)
    rule = BlockedNorm() if name.startswith("channel_norm") else TiledReduction()
    assert rule.schedule(sch, spec)
    inputs = _inputs(func, seed=1)
    want = _run(func, HOST, [a.copy() for a in inputs])
    got = _run(sch.mod["main"], HOST, [a.copy() for a in inputs])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_a_kernel_already_scheduled_is_left_alone(host_kernels):
    """What a tuning record scheduled (MetaScheduleApplyDatabase marks it) wins over the default."""
    import tvm

    name = _pick(host_kernels, KINDS["1x1 conv + GELU"])
    marked = host_kernels[name].with_attr("tirx.is_scheduled", True)
    target = as_target(HOST)
    with target:
        out = schedules.default_schedule()(tvm.IRModule({name: marked.with_attr("target", target)}))
    assert "T.parallel" not in out[name].script()


def test_a_kernel_no_rule_knows_is_declined_not_broken():
    """A rule that cannot analyse a kernel returns None (the next rule, or no schedule), never raises."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def gather(a: T.Buffer((T.int64(16),), "float32"), idx: T.Buffer((T.int64(8),), "int64"),
               out: T.Buffer((T.int64(8),), "float32")):
        for i in range(T.int64(8)):
            with T.sblock("g"):
                vi = T.axis.spatial(T.int64(8), i)
                out[vi] = a[idx[vi]]

    target = as_target(HOST)
    assert TiledReduction().apply(gather, target, False) is None
    sch = schedules.schedule_func(gather, target)  # the elementwise rule still threads it
    inputs = [np.arange(16, dtype="float32"), np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype="int64"),
              np.zeros(8, dtype="float32")]
    assert np.array_equal(_run(sch.mod["main"], HOST, inputs), inputs[0][inputs[1]])


@pytest.mark.parametrize("lanes, want", [
    (4, {56: 8, 28: 4, 14: 7, 7: 7}),  # NEON
    (8, {56: 8, 28: 14, 14: 14, 7: 7}),  # AVX2
    (16, {56: 8, 28: 14, 14: 14, 7: 7, 3136: 32}),  # AVX-512: never 28 (a register and three quarters)
])
def test_vector_factor_prefers_whole_power_of_two_pieces(lanes, want):
    assert {n: vector_factor(n, lanes) for n in want} == want


def _tile_loops(sch, block_name):
    """(extent, kind) of the loops under the reduction loops of a block: its register tile."""
    import tvm

    block = sch.get_sblock(block_name)
    loops = [sch.get(lp) for lp in sch.get_loops(block)]
    kinds = {tvm.tirx.ForKind.UNROLLED: "unroll", tvm.tirx.ForKind.VECTORIZED: "vector"}
    tile = []
    for lp in reversed(loops):
        if lp.kind not in kinds:
            break
        tile.append((int(lp.extent), kinds[lp.kind]))
    return tile[::-1]


@pytest.mark.parametrize("pixels, pair", [(14, True), (7, False)])
def test_packed_conv_tile_takes_two_weight_vectors_when_the_pixels_tile_well(host_nchw_kernels, pixels, pair):
    """AVX2 (8 lanes, 16 registers): 14-pixel rows give 2 vectors x 2x2 pixels; 7-pixel rows would give
    2 vectors x 1 pixel, so those keep one vector x 7 pixels."""
    from tvm import s_tir

    from c2f_edge.backend.legalize.conv2d_packed import PACKED_BLOCK

    name = _pick(host_nchw_kernels, lambda n, s: "gelu" in n and len(s[1]) == 5 and s[1][2:4] == (1, 1)
                 and s[0][2] == pixels)
    sch = s_tir.Schedule(host_nchw_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=8, registers=16))
    tile = _tile_loops(sch, PACKED_BLOCK + "_update")
    assert tile[-1] == (8, "vector")
    assert (tile[0] == (2, "unroll")) == pair, tile
    accumulators = np.prod([e for e, _ in tile]) // 8
    assert 7 <= accumulators <= 12, tile


def test_channel_norm_accumulates_in_registers(host_nchw_kernels):
    """Both channel sums live in per-task scratch (registers), vectorized over a pixel row, one row per task."""
    from tvm import s_tir

    name = _pick(host_nchw_kernels, KINDS["channels-first LayerNorm"])
    sch = s_tir.Schedule(host_nchw_kernels[name])
    assert ChannelNorm().schedule(sch, CpuSpec(lanes=16, registers=32))
    assert _tile_loops(sch, "channel_sum_update")[-1][1] == "vector"
    assert "T.parallel" in sch.mod.script()
    assert _heap_calls_per_task(sch.mod["main"], HOST) == []


def test_blocked_norm_accumulates_in_registers(host_kernels):
    """The blocked LayerNorm: both sums over the channel blocks in one vector per pixel, rows in parallel."""
    from tvm import s_tir

    from c2f_edge.backend.schedules import BlockedNorm

    name = _pick(host_kernels, KINDS["channels-first LayerNorm"])
    sch = s_tir.Schedule(host_kernels[name])
    assert BlockedNorm().schedule(sch, CpuSpec(lanes=8, registers=16))
    assert _tile_loops(sch, "nchwc_sum_update")[-1] == (8, "vector")
    assert "T.parallel" in sch.mod.script()
    assert _heap_calls_per_task(sch.mod["main"], HOST) == []


def test_blocked_conv_tile_takes_two_output_channel_blocks(host_kernels):
    """A blocked 1x1 conv broadcasts its input: two blocks of output channels (two weight vectors) meet
    each broadcast value, as the two-vector tile of the NCHW path does."""
    from tvm import s_tir

    from c2f_edge.backend.passes.block_channels import CONV_BLOCK

    name = _pick(host_kernels, lambda n, s: len(s[1]) == 6 and s[1][2:4] == (1, 1) and s[0][2] == 14)
    sch = s_tir.Schedule(host_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=8, registers=16))
    tile = _tile_loops(sch, CONV_BLOCK + "_update")
    assert tile[0] == (2, "unroll") and tile[-1] == (8, "vector"), tile
    assert 4 <= np.prod([e for e, _ in tile]) // 8 <= 12, tile


@pytest.mark.parametrize("registers, blocks, pixels", [(16, 1, 7), (32, 2, 7)], ids=["avx2", "32-registers"])
def test_a_7_pixel_row_takes_the_tile_with_more_accumulators(host_kernels, registers, blocks, pixels):
    """With 12 accumulators (AVX2, armv7), two output blocks leave room for 6 pixels, and 7 tiles by 1:
    2 accumulators, too few to hide the FMA latency (stage 4 ran at 29% of Zen 3's peak). One block x 7
    pixels holds 7. With 32 registers both blocks fit beside the 7 pixels, and keep their pair."""
    from tvm import s_tir

    from c2f_edge.backend.passes.block_channels import CONV_BLOCK

    name = _pick(host_kernels, KINDS["1x1 conv on 7-pixel rows"])
    sch = s_tir.Schedule(host_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=8, registers=registers))
    tile = _tile_loops(sch, CONV_BLOCK + "_update")
    assert tile == ([(2, "unroll")] if blocks == 2 else []) + [(pixels, "unroll"), (8, "vector")], tile


def _pad_blocks(sch) -> list:
    return [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.startswith("pad")]


def _outermost_loops(sch) -> set:
    """The distinct outermost loops of a kernel's blocks: one where everything runs under the tile loop."""
    return {sch.get(sch.get_loops(b)[0]) for b in sch.get_child_blocks(sch.get_sblock("root"))}


@pytest.mark.parametrize("kind, registers, per_tile", [
    ("depthwise 3x3 + GELU + residual", 16, True), ("depthwise 3x3 + GELU + residual", 32, True),
    ("depthwise 11x11 * v", 16, False), ("stem 3x3 conv", 16, False)])
def test_a_depthwise_3x3_pads_each_tile_in_cache(host_kernels, kind, registers, per_tile):
    """The depthwise 3x3 pads each tile's patch under the tile loop (3.75x the padded tensor's values, in
    L1) instead of writing the whole padded tensor and reading it back; an 11x11 patch is 25x, and a dense
    conv would pad its input again for every block of output channels: those pad once, up front."""
    from tvm import s_tir

    name = _pick(host_kernels, KINDS[kind])
    sch = s_tir.Schedule(host_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=8, registers=registers))
    pads = _pad_blocks(sch)
    assert len(pads) == 1, name
    assert (len(_outermost_loops(sch)) == 1) == per_tile, sch.mod.script()


def test_a_dense_conv_pads_its_input_once_even_where_the_patches_are_few(avx512_kernels):
    """With AVX-512's tiles the stem's blocked 3x3 conv would pad under 4x its input per tile, but each
    block of output channels would pad the same patch again (the input is their broadcast operand)."""
    from tvm import s_tir

    name = _pick(avx512_kernels, KINDS["blocked 3x3 conv"])
    sch = s_tir.Schedule(avx512_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=16, registers=32))
    assert len(_outermost_loops(sch)) == 2, sch.mod.script()


def test_a_pad_done_once_steps_its_inner_loops(host_kernels):
    """A pad done once, up front, runs its threads over the leading loops only: fused into one loop its
    indices were a division and a modulo per vector copied (about 25 integer instructions on the A76)."""
    from tvm import s_tir, tirx

    from c2f_edge.backend.schedules.base import PAD_PARALLEL_ITEMS

    name = _pick(host_kernels, KINDS["depthwise 11x11 * v"])
    sch = s_tir.Schedule(host_kernels[name])
    assert TiledReduction().schedule(sch, CpuSpec(lanes=8, registers=16))
    (pad,) = _pad_blocks(sch)
    loops = [sch.get(lp) for lp in sch.get_loops(pad)]
    shape = [int(d) for d in sch.get(pad).writes[0].source.shape]
    assert loops[0].kind == tirx.ForKind.PARALLEL and int(loops[0].extent) >= PAD_PARALLEL_ITEMS
    assert [int(lp.extent) for lp in loops[1:]] == shape[len(shape) - len(loops) + 1:], sch.mod.script()
    assert len(loops) >= 3, f"the pad's loops are fused: {[int(lp.extent) for lp in loops]}"


def _heap_calls_per_task(func, target) -> list[str]:
    """The parallel tasks of the compiled kernel that call TVMBackendAllocWorkspace (once per task each)."""
    ll = _build(func, target).inspect_source("ll")
    assert "parallel_lambda" in ll
    callers, current = [], None
    for line in ll.splitlines():
        if line.startswith("define "):
            current = line.split("@", 1)[1].split("(", 1)[0]
        elif "parallel_lambda" in str(current) and "@__TVMBackendAllocWorkspace" in line:
            callers.append(current)  # the call goes through this function pointer
    return callers


@pytest.mark.parametrize("kind", ["1x1 conv + GELU", "depthwise 11x11 * v", "channels-first LayerNorm"])
def test_per_tile_scratch_is_no_heap_call(arm64_kernels, kind):
    """A register tile or a pixel's sums live on the stack of the parallel task (LLVM keeps them in
    registers), not in a TVMBackendAllocWorkspace/Free pair per tile: TVM lowers a "local" buffer that way."""
    name = _pick(arm64_kernels, KINDS[kind])
    sch = schedules.schedule_func(arm64_kernels[name], as_target(ARM64))
    assert sch is not None
    assert _heap_calls_per_task(sch.mod["main"], ARM64) == [], name


def _fp16_conv_1x1(target, c: int = 64):
    """The blocked, chunked fp16 kernel of a 1x1 conv, as the pipeline lowers it for `target`."""
    import tvm
    from tvm import relax

    from c2f_edge.backend import pipeline
    from c2f_edge.backend.passes.block_channels import CONV_BLOCK
    from c2f_edge.backend.precision import FP16

    w = np.random.default_rng(0).standard_normal((c, c, 1, 1)).astype("float32")
    x = relax.Var("input", relax.TensorType((1, c, 14, 14), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w)))
        bb.emit_func_output(out)
    fused = pipeline.legalize_and_fuse(bb.get(), target, precision=FP16)  # conv_chunk 16, capped at 8 lanes
    return next(f for gv, f in fused.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and CONV_BLOCK in f.script())


ARM64_FP16 = {**ARM64, "mattr": ["+neon", "+fullfp16"]}


def test_a_chunked_fp16_conv_tile_leaves_room_for_the_vectors_it_holds():
    """On NEON an fp16 conv sums chunks of at most 8 products (one register of lanes), whose 8 weight
    vectors stay in registers across the tile: two sets of output channels fit (16 of 32 registers)."""
    from tvm import s_tir

    from c2f_edge.backend.passes.block_channels import CONV_BLOCK

    conv = _fp16_conv_1x1(ARM64_FP16)
    assert conv.script().count("] * B[") == 8  # the chunk: 8 products, not 16
    sch = s_tir.Schedule(conv)
    assert TiledReduction().schedule(sch, cpu_spec(as_target(ARM64_FP16), "float16"))
    tile = _tile_loops(sch, CONV_BLOCK + "_update")
    assert tile[-1] == (8, "vector") and tile[0] == (2, "unroll"), tile
    accumulators = np.prod([e for e, _ in tile]) // 8
    assert accumulators + 2 * 8 <= 28, tile


def test_a_chunked_fp16_conv_loads_a_pixels_chunk_as_one_vector():
    """A chunk's 8 input channels of one pixel are contiguous: one q-register load per pixel, and each
    product takes its activation from a lane of it (`fmla v.8h, v.8h, v.h[i]`), not a scalar `ldr h` per
    value (which made the whole fp16 model bound by loads on the A76)."""
    import re

    from tvm import s_tir

    conv = _fp16_conv_1x1(ARM64_FP16)
    sch = s_tir.Schedule(conv)
    assert TiledReduction().schedule(sch, cpu_spec(as_target(ARM64_FP16), "float16"))
    asm = _build(sch.mod["main"], ARM64_FP16).inspect_source("asm")
    by_lane = re.findall(r"\tf(?:mla|mul)\tv\d+\.8h, v\d+\.8h, v\d+\.h\[(\d)\]", asm)
    assert {int(i) for i in by_lane} == set(range(8)), sorted(set(by_lane))
    scalar_loads = re.findall(r"\t(?:ldr|ldur|ld1r)\t(?:h\d+|\{ v\d+\.8h \})", asm)
    assert not scalar_loads, scalar_loads[:4]
    # the staged lanes are the right ones: the ARM schedule, built for this host, computes the conv
    rng = np.random.default_rng(1)
    shapes = [list(s) for s in _shapes(conv)]
    args = [(rng.standard_normal(s) / 8).astype("float16") for s in shapes[:-1]] + [np.zeros(shapes[-1], "float16")]
    want = _run(conv, {"kind": "llvm"}, [a.copy() for a in args])
    got = _run(sch.mod["main"], {"kind": "llvm"}, [a.copy() for a in args])
    np.testing.assert_allclose(got.astype("float32"), want.astype("float32"), rtol=1e-2, atol=1e-2)
