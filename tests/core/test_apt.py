"""core.apt against stand-in apt tools (tests/fixtures/apt.py): retries, judging by candidates, errors."""

from __future__ import annotations

import pytest

from c2f_edge.core import apt
from c2f_edge.core.errors import ToolchainError
from tests.fixtures.apt import MIRROR_SYNC, list_name

NEEDS = apt.Needs(install=("qemu-user-static",), download={"arm64": ("python3.11", "libc6")})
MAIN = {list_name("bookworm", "amd64"): ["qemu-user-static"],
        list_name("bookworm", "arm64"): ["python3.11", "libc6"]}


def quiet(msg):
    pass


def test_failed_index_names_the_index_and_reason_of_a_mirror_sync():
    index, reason = apt.failed_index(MIRROR_SYNC)
    assert index == "bookworm-security/main/binary-armhf/Packages.xz"
    assert reason == "File has unexpected size (356624 != 356976). Mirror sync in progress?"


def test_failed_index_without_a_fetch_error_gives_the_last_error():
    assert apt.failed_index("W: something\nE: Could not get lock /var/lib/apt/lists/lock\n") == \
        ("an index", "Could not get lock /var/lib/apt/lists/lock")


def test_update_retries_a_bounded_number_of_times_with_a_doubling_backoff(fake_apt):
    fake_apt.set(updates=[{"rc": 100, "writes": MAIN, "stderr": MIRROR_SYNC}])
    slept = []
    done = apt.update(attempts=4, backoff=5, log=quiet, sleep=slept.append)
    assert not done.ok and done.attempts == 4
    assert len(fake_apt.calls("apt-get update")) == 4
    assert slept == [5, 10, 20]  # none after the last attempt
    assert done.index == "bookworm-security/main/binary-armhf/Packages.xz"


def test_update_stops_retrying_once_it_succeeds(fake_apt):
    fake_apt.set(updates=[{"rc": 100, "writes": {}, "stderr": MIRROR_SYNC}, {"rc": 0, "writes": MAIN}])
    done = apt.update(attempts=3, backoff=0, log=quiet, sleep=lambda s: None)
    assert done.ok and done.attempts == 2
    assert len(fake_apt.calls("apt-get update")) == 2


def test_candidates_and_lists_come_from_the_lists(fake_apt):
    fake_apt.write_lists({list_name("bookworm", "arm64"): ["python3.11"]})
    assert apt.has_candidate("python3.11:arm64")
    assert not apt.has_candidate("python3.11:armhf")
    assert not apt.has_candidate("qemu-user-static")
    assert apt.has_lists("arm64", fake_apt.lists) and not apt.has_lists("armhf", fake_apt.lists)
    assert apt.missing(NEEDS, fake_apt.lists) == ["qemu-user-static", "libc6:arm64"]


def test_ensure_goes_on_after_a_partial_update_that_left_what_is_needed(fake_apt):
    fake_apt.set(updates=[{"rc": 100, "writes": MAIN, "stderr": MIRROR_SYNC}])
    logged = []
    done = apt.ensure(NEEDS, lists=fake_apt.lists, backoff=0, log=logged.append, sleep=lambda s: None)
    assert not done.ok and done.attempts == apt.ATTEMPTS
    assert fake_apt.state()["installed"] == ["qemu-user-static"]
    assert fake_apt.state()["foreign"] == ["arm64"]
    assert any(m.startswith("warning: apt-get update failed on bookworm-security/main/binary-armhf")
               for m in logged)


def test_ensure_fails_in_one_line_naming_the_index_the_package_and_the_fix(fake_apt):
    partial = {list_name("bookworm", "amd64"): ["qemu-user-static"], list_name("bookworm", "arm64"): ["libc6"]}
    fake_apt.set(updates=[{"rc": 100, "writes": partial, "stderr": MIRROR_SYNC}])
    with pytest.raises(ToolchainError) as e:
        apt.ensure(NEEDS, lists=fake_apt.lists, backoff=0, log=quiet, sleep=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and not e.value.hint
    assert "bookworm-security/main/binary-armhf/Packages.xz" in msg
    assert "python3.11:arm64" in msg and "libc6" not in msg
    assert "another mirror" in msg
    assert fake_apt.calls("apt-get install") == []  # nothing installed on a failed setup


def test_ensure_after_a_clean_update_that_lacks_a_package_blames_the_sources(fake_apt):
    fake_apt.set(updates=[{"rc": 0, "writes": {list_name("bookworm", "amd64"): ["qemu-user-static"]}}])
    with pytest.raises(ToolchainError, match=r"apt has no arm64 package lists, python3.11:arm64, "
                                             r"libc6:arm64 although apt-get update succeeded"):
        apt.ensure(NEEDS, lists=fake_apt.lists, log=quiet)


def test_ensure_skips_the_update_when_all_is_there_unless_always(fake_apt):
    fake_apt.write_lists(MAIN)
    fake_apt.set(foreign=["arm64"], installed=["qemu-user-static"])
    assert apt.ensure(NEEDS, lists=fake_apt.lists, log=quiet) is None
    assert fake_apt.calls("apt-get") == [] and fake_apt.calls("dpkg --add") == []
    done = apt.ensure(NEEDS, always_update=True, lists=fake_apt.lists, log=quiet)
    assert done.ok and len(fake_apt.calls("apt-get update")) == 1
    assert fake_apt.calls("apt-get install") == []


def test_ensure_updates_before_it_installs(fake_apt):
    fake_apt.write_lists(MAIN)
    fake_apt.set(foreign=["arm64"])  # lists there, qemu-user-static not installed
    apt.ensure(NEEDS, lists=fake_apt.lists, log=quiet)
    calls = fake_apt.calls("apt-get")
    assert [c.split()[1] for c in calls] == ["update", "install"]


def test_failed_package_reads_apts_errors():
    assert apt.failed_package("E: Failed to fetch http://deb.debian.org/debian/pool/main/p/python3.11/"
                              "python3.11_3.11.2-6+deb12u6_arm64.deb  404  Not Found [IP: 1.2.3.4 80]") \
        == "python3.11:arm64"
    assert apt.failed_package("E: Unable to locate package libc6:armhf") == "libc6:armhf"
    assert apt.failed_package("E: Can't select candidate version from package foo as it has no candidate") \
        == "foo"
    assert apt.failed_package("E: something else") == ""


def test_download_and_unpack_work_from_the_lists_a_partial_update_left(fake_apt, tmp_path):
    fake_apt.write_lists({list_name("bookworm", "armhf"): ["libc6", "libgcc-s1"]})  # no security lists
    debs = tmp_path / "debs"
    debs.mkdir()
    files = apt.download(["libc6:armhf", "libgcc-s1:armhf"], debs)
    assert [f.name for f in files] == ["libc6_1.0-1_armhf.deb", "libgcc-s1_1.0-1_armhf.deb"]
    apt.unpack(files, tmp_path / "root")
    assert (tmp_path / "root/lib/libc6").read_text() == "libc6:armhf"


def test_a_failed_download_names_the_package_in_one_line(fake_apt, tmp_path):
    fake_apt.write_lists({list_name("bookworm", "armhf"): ["libc6", "libgcc-s1"]})
    fake_apt.set(download_fails=["libgcc-s1:armhf"])
    with pytest.raises(ToolchainError) as e:
        apt.download(["libc6:armhf", "libgcc-s1:armhf"], tmp_path)
    assert str(e.value).startswith("apt-get download failed for libgcc-s1:armhf (404  Not Found)")
    assert "\n" not in str(e.value)
    with pytest.raises(ToolchainError, match=r"apt-get download failed for gcc-12-base:armhf \(Unable to locate"):
        apt.download(["gcc-12-base:armhf"], tmp_path)


def test_a_truncated_deb_is_named(tmp_path):
    (tmp_path / "cut_1.0_armhf.deb").write_bytes(b"!<arch>\n")
    with pytest.raises(ToolchainError, match=r"^cut_1.0_armhf.deb cannot be unpacked"):
        apt.unpack([tmp_path / "cut_1.0_armhf.deb"], tmp_path / "root")


def test_deb_src_turns_the_systems_deb_sources_into_source_ones(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# comment\ndeb http://m/debian bookworm main\n"
                                           "deb-src http://m/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n")
    (tmp_path / "sources.list.d" / "node.sources.disabled-by-farm").write_text("Types: deb\nURIs: http://n\n")
    got = apt.deb_src(tmp_path)
    assert set(got) == {"sources.list", "debian.sources"}  # a disabled file stays out, as apt leaves it
    assert got["sources.list"] == "deb-src http://m/debian bookworm main\n"
    assert got["debian.sources"].count("Types: deb-src\n") == 2 and "Types: deb\n" not in got["debian.sources"]
    assert "Suites: bookworm bookworm-updates" in got["debian.sources"]
