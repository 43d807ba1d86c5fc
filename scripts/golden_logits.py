"""Regenerate tests/data/golden_logits.json from upstream's own code (HVision-NKU/Conv2Former).

    git clone https://github.com/HVision-NKU/Conv2Former upstream     # on a machine with internet
    python scripts/golden_logits.py --upstream upstream --out tests/data/golden_logits.json
    python scripts/golden_logits.py --upstream upstream --check        # compare with the committed file

It imports upstream's models/conv2former.py unchanged (timm, which it imports for a few helpers, is
stubbed), builds Conv2Former-N with kernel 7 (`conv2former_n()` at the commit given) and kernel 11 (the
same configuration as `conv2former_n` before commit 91d1bda), loads the seeded weights below into it and
runs two seeded inputs. The provenance records the sha256 of the file it imported, so numbers made from
our own model instead of upstream's (they would be equal today) can be told apart.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = "HVision-NKU/Conv2Former"
FILE = "models/conv2former.py"
SEED, INPUT_SEED = 0, 1234
N = {"dims": [64, 128, 256, 512], "depths": [2, 2, 8, 2], "mlp_ratios": [4, 4, 4, 4]}
STUBS = ("timm.models.layers.DropPath -> identity module, trunc_normal_ -> torch.nn.init.trunc_normal_; "
         "timm.models.registry.register_model -> identity decorator; timm.models.vision_transformer._cfg -> dict")


def seeded_state_dict(shapes: dict, seed: int = SEED) -> dict:
    """The weights the golden logits are computed with (numpy only, so upstream gets the same ones).

    Not the official init: layer scales of 0.1-1 and real BatchNorm statistics, so every block counts."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        if name.endswith("num_batches_tracked"):
            out[name] = np.array(0, np.int64)
            continue
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("running_mean"):
            v = rng.normal(0.0, 0.2, shape)
        elif "layer_scale" in name:
            v = rng.uniform(0.1, 1.0, shape)
        elif name.endswith(".bias"):
            v = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:
            v = rng.uniform(0.5, 1.5, shape)
        else:
            v = rng.normal(0.0, (2.0 / int(np.prod(shape[1:]))) ** 0.5, shape)
        out[name] = v.astype(np.float32)
    return out


def inputs() -> np.ndarray:
    return np.random.default_rng(INPUT_SEED).standard_normal((2, 3, 224, 224)).astype(np.float32)


def _timm_stubs() -> dict:
    import torch

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    class DropPath(torch.nn.Identity):
        def __init__(self, *args, **kwargs):
            super().__init__()

    return {"timm": module("timm"), "timm.models": module("timm.models"),
            "timm.models.layers": module("timm.models.layers", DropPath=DropPath,
                                         trunc_normal_=torch.nn.init.trunc_normal_),
            "timm.models.registry": module("timm.models.registry", register_model=lambda f: f),
            "timm.models.vision_transformer": module("timm.models.vision_transformer", _cfg=lambda **kw: dict(kw))}


def load_upstream(path: Path):
    """(upstream's conv2former module, the sha256 of the file imported). path: a checkout or the file."""
    source = path / FILE if path.is_dir() else path
    if not source.is_file():
        raise SystemExit(f"error: no {FILE} under {path}\nhint: pass a checkout of https://github.com/{REPO}")
    saved = {k: sys.modules.get(k) for k in _timm_stubs()}
    sys.modules.update(_timm_stubs())
    try:
        spec = importlib.util.spec_from_file_location("upstream_conv2former", source)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod, hashlib.sha256(source.read_bytes()).hexdigest()


def logits(model) -> list:
    import torch

    sd = seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(inputs())).numpy().tolist()


def _commit(path: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(path if path.is_dir() else path.parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def golden(upstream: Path) -> dict:
    import torch

    mod, sha = load_upstream(upstream)
    models = {"n_k7": (7, mod.conv2former_n()), "n_k11": (11, mod.Conv2Former(kernel_size=11, **N))}
    return {
        "provenance": {
            "repo": REPO, "commit": _commit(upstream), "file": FILE, "file_sha256": sha,
            "script": "scripts/golden_logits.py",
            "how": (f"upstream {FILE} imported unchanged; timm stubbed ({STUBS}). n_k7 = conv2former_n(); n_k11 = "
                    f"Conv2Former(kernel_size=11, {N}). eval, drop_path 0, num_classes 1000; weights "
                    f"seeded_state_dict(seed {SEED}), strict load; inputs default_rng({INPUT_SEED}) standard normal "
                    f"(2,3,224,224) float32; torch.no_grad float32; torch {torch.__version__}, numpy {np.__version__}"),
        },
        "models": {key: {"kernel_size": k, "logits": logits(m)} for key, (k, m) in models.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", type=Path, required=True, help=f"a checkout of {REPO} (or its {FILE})")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", type=Path, help="write the golden logits here")
    g.add_argument("--check", type=Path, nargs="?", const=Path(__file__).parents[1] / "tests/data/golden_logits.json",
                   help="compare with this file instead (default tests/data/golden_logits.json)")
    args = p.parse_args(argv)
    new = golden(args.upstream)
    if args.out:
        with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as f:
            json.dump(new, f)
        os.chmod(f.name, 0o644)
        Path(f.name).replace(args.out)
        print(f"wrote {args.out} from {new['provenance']['file_sha256'][:12]} ({new['provenance']['commit']})")
        return 0
    old = json.loads(args.check.read_text())
    diff = max(float(np.abs(np.asarray(new["models"][k]["logits"]) - np.asarray(v["logits"])).max())
               for k, v in old["models"].items())
    same_file = old["provenance"].get("file_sha256") == new["provenance"]["file_sha256"]
    print(f"max abs diff {diff:.3g}; upstream file {'the same' if same_file else 'DIFFERENT'} "
          f"({new['provenance']['file_sha256'][:12]} vs {str(old['provenance'].get('file_sha256'))[:12]})")
    return 0 if diff <= 1e-5 and same_file else 1


if __name__ == "__main__":
    sys.exit(main())
