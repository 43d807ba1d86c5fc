"""The per-block record the instruction-count plugin (board/insn_count.c) writes: which basic blocks ran
inside the marked regions, how often, and their instruction words. Its format is in insn_count.c."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f_edge.core.errors import ArtifactError


@dataclass
class Profile:
    """The blocks run inside the marked regions: address, executions and instruction words of each."""

    regions: int
    address: np.ndarray     # uint64, one per block
    executions: np.ndarray  # uint64, one per block
    words: np.ndarray       # uint32, every block's instructions, block after block
    starts: np.ndarray      # int64, where each block's words begin (len = blocks + 1)

    def executions_per_word(self) -> np.ndarray:
        return np.repeat(self.executions, np.diff(self.starts))


def read_profile(path: str | Path) -> Profile:
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    if data[:4] != b"C2FB":
        raise ArtifactError(f"{path} is not an instruction profile (did the guest run to its end?)",
                            hint="the plugin writes it when qemu exits")
    version, regions, n = struct.unpack_from("<3I", data, 4)
    if version != 1:
        raise ArtifactError(f"{path}: profile version {version}, this reads 1", hint="re-run the count")
    pos, address, executions, chunks, starts = 16, [], [], [], [0]
    for _ in range(n):
        vaddr, execs, k = struct.unpack_from("<QQI", data, pos)
        pos += 20
        address.append(vaddr)
        executions.append(execs)
        chunks.append(np.frombuffer(data, "<u4", k, pos))
        starts.append(starts[-1] + k)
        pos += 4 * k
    words = np.concatenate(chunks) if chunks else np.zeros(0, np.uint32)
    return Profile(regions, np.array(address, np.uint64), np.array(executions, np.uint64), words.astype(np.uint32),
                   np.array(starts, np.int64))
