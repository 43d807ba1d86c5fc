"""One cache root for everything c2f-edge builds once per machine."""

from pathlib import Path

from c2f_edge.core.cache import cache_dir, cache_root


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("C2F_EDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == Path.home() / ".cache" / "c2f-edge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "c2f-edge"
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_dir("zig") == tmp_path / "mine" / "zig" and (tmp_path / "mine" / "zig").is_dir()


def test_every_cache_user_honours_c2f_edge_cache(monkeypatch, tmp_path):
    """The kernel runner used to build its path from XDG_CACHE_HOME alone and ignore C2F_EDGE_CACHE."""
    from c2f_edge.backend import crosslink
    from c2f_edge.board import emulator, kernel_runner, rpc
    from c2f_edge.export import scopes

    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path))
    assert Path(crosslink.zig_env()["ZIG_GLOBAL_CACHE_DIR"]).is_relative_to(tmp_path)
    assert emulator.emulator_dir().is_relative_to(tmp_path)
    assert rpc.run_dir().is_relative_to(tmp_path)
    assert scopes.scopes_cache_path("n", 20).is_relative_to(tmp_path)
    # an armhf libc already unpacked under the cache root is used as it is, nothing is downloaded
    (tmp_path / kernel_runner.CACHE / "rootfs-armhf" / "lib").mkdir(parents=True)
    assert kernel_runner.rootfs("armhf") == tmp_path / kernel_runner.CACHE / "rootfs-armhf"
