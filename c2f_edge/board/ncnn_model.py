"""A torch model as an ncnn model for the emulated board's ncnn (board/insn_count.count_ncnn), through pnnx.

pnnx is the optional `bench` extra (pip install -c constraints.txt 'c2f-edge[bench]'). It reads TorchScript:
from an ONNX file it writes channel means with an empty axis list (wrong logits). Weights stay fp32 (fp16=0),
so that ncnn's own options decide the precision at run time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

MISSING = "skipped: pnnx is not installed (pip install -c constraints.txt 'c2f-edge[bench]')"


def convert(torch_model, shape: list[int], model_dir: Path) -> Path | str:
    """`model_dir`/model.ncnn (the path without .param/.bin), converted once and then reused; or why not."""
    try:
        import pnnx
    except ImportError:
        return MISSING
    stem = model_dir / "model.ncnn"
    if (model_dir / "model.ncnn.bin").is_file():
        return stem
    import torch

    model_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.jit.trace(torch_model.eval(), torch.zeros(shape)).save(str(model_dir / "model.pt"))
    tool = Path(pnnx.__file__).parent / "pnnx"
    proc = subprocess.run([str(tool), "model.pt", f"inputshape=[{','.join(map(str, shape))}]", "fp16=0"],
                          cwd=model_dir, capture_output=True, text=True, check=False)
    if proc.returncode or not (model_dir / "model.ncnn.bin").is_file():
        for f in model_dir.glob("model.ncnn.*"):  # no half-written model for the next run to reuse
            f.unlink()
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"skipped: pnnx could not convert the model ({tail})"
    return stem
