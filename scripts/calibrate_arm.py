#!/usr/bin/env python
"""How far to trust the cycle model (c2f_edge/board/cycle_model.py): its estimates against real Pi times.

ncnn publishes `benchncnn` times on real boards. This script runs two of those nets, ResNet-18 and
MobileNetV2 at 224x224 (defined here in torch, random weights: counts do not depend on them; converted with
pnnx), with ncnn's default options on the emulated core of each board, one thread, counts one inference after
a warm-up, estimates it with the cycle model, and compares with the published time:

  raw      the model's estimate (a throughput bound: it reads low)
  scaled   the estimate times one factor per board, fitted on the other net (published / raw of that net):
           a held-out prediction, the model's error bar

    python scripts/calibrate_arm.py [--board rpi5 rpi4] [--json PATH]

Needs `make setup-system` and pnnx (pip install -c constraints.txt 'c2f-edge[bench]'). About 2 minutes a net
and board, most of it emulation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ncnn's benchmark/README.md (github.com/Tencent/ncnn, read 2026-12-06): benchncnn 10 1 0 -1, default options
# (fp16 arithmetic on the A76, fp32 on the A72), one thread, average ms.
PUBLISHED_MS = {
    "rpi5": {"mobilenet_v2": 16.38, "resnet18": 29.68},  # Raspberry Pi 5, BCM2712, Cortex-A76 2.4 GHz
    "rpi4": {"mobilenet_v2": 93.48, "resnet18": 191.10},  # Raspberry Pi 4 Model B, BCM2711, Cortex-A72 1.8 GHz
}
BOARDS = {"rpi5": "cortex-a76", "rpi4": "cortex-a72"}
NETS = ("resnet18", "mobilenet_v2")


def _nets():
    """ResNet-18 (He et al. 2016) and MobileNetV2 (Sandler et al. 2018), ImageNet heads, written out."""
    from torch import nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act(inplace=True)) if act else nn.Sequential(*layers)

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
            self.skip = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                       conv_bn(hidden, cout, 1, act=None)]
            self.body, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    def resnet18():
        layers, cin = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
            cin = cout
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))

    def mobilenet_v2():
        layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
        for expand, cout, n, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                        (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                layers.append(Inverted(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
        return nn.Sequential(*layers)

    return {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}


def calibrate(raw: dict[str, float], published: dict[str, float]) -> dict[str, dict]:
    """Per net: raw estimate, the factor fitted on the other net, the held-out scaled estimate, its error."""
    out = {}
    for net, ms in raw.items():
        other = next(n for n in raw if n != net)
        factor = published[other] / raw[other]
        scaled = ms * factor
        out[net] = {"raw_ms": ms, "factor_from": other, "factor": factor, "scaled_ms": scaled,
                    "published_ms": published[net], "raw_over_published": ms / published[net],
                    "scaled_error": scaled / published[net] - 1.0}
    return out


def mca_check(profile, core, top: int = 5) -> list[dict]:
    """The `top` blocks by estimated cycles, each with the model's cycles per execution and llvm-mca's block
    reciprocal throughput. Debian 12's llvm-mca (LLVM 14) models every Arm core with its Cortex-A57 model,
    the A72's pipeline, so the check means something for the A72 only."""
    import shutil
    import subprocess

    from c2f_edge.board import cycle_model

    if not (shutil.which("llvm-mc") and shutil.which("llvm-mca")):
        return []
    per_exec = cycle_model.block_cycles(profile, core)
    order = np.argsort(-(per_exec * profile.executions.astype(np.float64)))[:top]
    out = []
    for b in order.tolist():
        words = profile.words[profile.starts[b]:profile.starts[b + 1]]
        hexes = "\n".join(" ".join(f"0x{byte:02x}" for byte in int(w).to_bytes(4, "little")) for w in words)
        asm = subprocess.run(["llvm-mc", "--disassemble", "-triple=aarch64", "-mattr=+fullfp16,+dotprod"],
                             input=hexes, capture_output=True, text=True, check=False).stdout
        mca = subprocess.run(["llvm-mca", "-mtriple=aarch64", "-mcpu=cortex-a57", "-iterations=100"], input=asm,
                             capture_output=True, text=True, check=False).stdout
        m = next((ln.split(":")[1] for ln in mca.splitlines() if ln.startswith("Block RThroughput")), None)
        out.append({"instructions": len(words), "executions": int(profile.executions[b]),
                    "model_cycles": float(per_exec[b]), "llvm_mca_a57": float(m) if m else None})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", nargs="+", choices=sorted(BOARDS), default=["rpi5", "rpi4"])
    p.add_argument("--model-dir", default="build/calibrate-arm", help="where the ncnn conversions are kept")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    from c2f_edge.board import cycle_model, insn_count, ncnn_model
    from c2f_edge.core.errors import C2FError, report

    torch.manual_seed(0)
    shape = [1, 3, 224, 224]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    results = {}
    try:
        models = {}
        for net, build in _nets().items():
            m = ncnn_model.convert(build(), shape, Path(args.model_dir) / net)
            if isinstance(m, str):
                print(f"error: {net}: {m}", file=sys.stderr)
                return 1
            models[net] = m
        with tempfile.TemporaryDirectory(prefix="c2f-calibrate-") as work:
            for board in args.board:
                cpu, raw, counts = BOARDS[board], {}, {}
                for net, model in models.items():
                    t0 = time.perf_counter()
                    print(f"counting {net} (ncnn, default options) on an emulated {cpu} ...", file=sys.stderr)
                    c = insn_count.count_ncnn(model, x, cpu, Path(work) / f"{board}-{net}")
                    print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                    raw[net] = c.estimate["ms"]
                    counts[net] = {"instructions": c.summary["instructions"], "fma_lanes": c.summary["fma_lanes"],
                                   "cycles": c.estimate["cycles"], "bound_by": c.estimate["bound_by"]}
                    if cpu == "cortex-a72":
                        counts[net]["hot_blocks_vs_llvm_mca"] = mca_check(c.profile, cycle_model.core(cpu))
                results[board] = {"cpu": cpu, "nets": calibrate(raw, PUBLISHED_MS[board]), "counts": counts}
    except C2FError as e:
        return report(e)
    print("\nThe cycle model against ncnn's published times (benchncnn, default options, 1 thread); ms")
    print("board  net           instructions  raw est.  published  raw/published  factor (from)         "
          "scaled  error")
    for board, r in results.items():
        for net, c in r["nets"].items():
            print(f"{board:6} {net:13} {r['counts'][net]['instructions'] / 1e6:10,.1f} M {c['raw_ms']:9.2f} "
                  f"{c['published_ms']:10.2f} {c['raw_over_published']:14.2f}  {c['factor']:5.2f} "
                  f"({c['factor_from']:12}) {c['scaled_ms']:7.2f} {100 * c['scaled_error']:+6.1f}%")
    for board, r in results.items():
        for net, c in r["counts"].items():
            for blk in c.get("hot_blocks_vs_llvm_mca", []):
                print(f"{board} {net} hot block: {blk['instructions']} instructions x {blk['executions']:,}: model "
                      f"{blk['model_cycles']:.2f} cycles, llvm-mca (A57 model) {blk['llvm_mca_a57']}")
    if args.json:
        doc = {"published_ms": PUBLISHED_MS, "source": "ncnn benchmark/README.md, read 2026-12-06",
               "input": "np.random.default_rng(0).standard_normal([1, 3, 224, 224]); torch.manual_seed(0) weights",
               "boards": results}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
