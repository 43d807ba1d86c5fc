"""RPC addresses for parity and `compile --verify`: parse them and open a session (or an emulated board)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from c2f_edge.core.errors import UsageError

RPC_FORMS = "rpc://HOST:PORT, rpc://tracker@HOST:PORT/KEY or emulated"
_DIRECT = re.compile(r"^rpc://(?P<host>[^:/@]+):(?P<port>\d+)/?$")
_TRACKER = re.compile(r"^rpc://tracker@(?P<host>[^:/@]+):(?P<port>\d+)/(?P<key>[^/]+)$")


@dataclass(frozen=True)
class RpcAddress:
    kind: str  # "direct" | "tracker" | "emulated"
    host: str | None = None
    port: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        if self.kind == "emulated":
            return "emulated"
        if self.kind == "tracker":
            return f"rpc://tracker@{self.host}:{self.port}/{self.key}"
        return f"rpc://{self.host}:{self.port}"


def parse_rpc(url: str) -> RpcAddress:
    url = (url or "").strip()
    if url == "emulated":
        return RpcAddress("emulated")
    if m := _DIRECT.match(url):
        return RpcAddress("direct", m["host"], int(m["port"]))
    if m := _TRACKER.match(url):
        return RpcAddress("tracker", m["host"], int(m["port"]), m["key"])
    raise UsageError(f"bad RPC address {url!r}", hint=f"write {RPC_FORMS}, e.g. rpc://tracker@127.0.0.1:9190/rk3588")


class Session:
    """An open RPC session, plus the emulated board we started for it (stopped on close)."""

    def __init__(self, address: RpcAddress, session, board=None):
        self.address, self.session, self.board = address, session, board

    def describe(self) -> str:
        if self.board is not None:
            return f"emulated aarch64 board ({self.board.address})"
        return str(self.address)

    def close(self) -> None:
        self.session = None
        if self.board is not None:
            self.board.stop()
            self.board = None


def check_reachable(url: str, timeout: float = 10.0) -> None:
    """RemoteError now, rather than after a long build, if the board at `url` (rpc://...) does not answer:
    its server refuses connections, or its tracker does, or no board is registered under its key. Opens
    no session, so it holds no board."""
    from c2f_edge.board import rpc

    addr = parse_rpc(url)
    if addr.kind == "direct":
        rpc.reach_server(f"{addr.host}:{addr.port}", timeout)
    elif addr.kind == "tracker":
        rpc.check_key(f"{addr.host}:{addr.port}", addr.key, timeout)


def open_session(url: str, timeout: float = 10.0, wait: float = 60.0) -> Session:
    """Connect to a board (RemoteError if unreachable), or start the emulated board and connect to it."""
    from c2f_edge.board import rpc

    addr = parse_rpc(url)
    if addr.kind == "emulated":
        from c2f_edge.board import emulator

        board = emulator.start_board()
        try:
            return Session(addr, rpc.connect(board.address, timeout=timeout, wait=wait), board)
        except BaseException:
            board.stop()
            raise
    if addr.kind == "direct":
        return Session(addr, rpc.connect(f"{addr.host}:{addr.port}", timeout=timeout, wait=wait))
    return Session(addr, rpc.connect(tracker=f"{addr.host}:{addr.port}", key=addr.key, timeout=timeout, wait=wait))
