"""torch -> ONNX with the dynamo exporter, quietly: one function for the stage and the raw export."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

from c2f_edge.core.errors import ExportError, first_line
from c2f_edge.core.onnx_file import INPUT_NAME, OUTPUT_NAME

DEFAULT_OPSET = 20


def trace_to_onnx(model, path: str | os.PathLike, opset: int = DEFAULT_OPSET, batch: int = 1, size: int = 224,
                  dynamic_batch: bool = False, what: str = "torch.onnx.export") -> None:
    """Write `path` (+ a .data sidecar with the weights). The dynamo exporter keeps Gelu as one op and
    gives half the nodes of the legacy one, and records each node's module scope (see export.scopes)."""
    import torch

    x = torch.zeros(batch, 3, size, size)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic_batch else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=dynamic, external_data=True, verbose=False)
        except Exception as e:
            raise ExportError(f"{what} failed at opset {opset}: {first_line(e)}",
                              hint="try another --opset (18-23); run with -v for the traceback") from e
