"""Stage 2, compile: a simplified ONNX file -> a TVM bundle for one target (model.so, manifest, README).

    stage.py    compile_bundle(CompileConfig(...)): import, build (tuning log applied), link, verify, write
    bundle.py   a bundle on disk, and loading it to run here or on a board over RPC
    verify.py   the check of a fresh bundle against PyTorch fp32 (`--verify local|emulated|rpc://...`)
    readme.py   the README.txt that goes to the board
"""

from c2f_edge.compile.bundle import (
           LIBRARY,
           BundleRunner,
           load_bundle,
           load_remote_bundle,
           read_bundle_manifest,
)
from c2f_edge.compile.stage import CompileConfig, compile_bundle
from c2f_edge.compile.verify import verify_bundle

__all__ = ["LIBRARY", "BundleRunner", "CompileConfig", "compile_bundle", "load_bundle", "load_remote_bundle",
           "read_bundle_manifest", "verify_bundle"]
