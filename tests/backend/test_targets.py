"""The target registry: TOML files -> TVM target JSON, and what it tells users about bad names."""

from __future__ import annotations

import pytest

from c2f_edge.backend import targets
from c2f_edge.core.errors import UnknownTargetError, UsageError

REQUIRED = {"host", "arm64", "rpi4", "rpi5", "jetson-orin", "armv7", "android-arm64", "mali", "adreno", "vulkan"}


def test_registry_has_all_targets():
    reg = targets.registry()
    assert REQUIRED <= set(reg)
    assert {n for n, s in reg.items() if s.device == "GPU"} >= {"mali", "adreno", "vulkan"}
    assert reg["mali"].kind == "opencl" and reg["adreno"].kind == "opencl" and reg["vulkan"].kind == "vulkan"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_target_resolves_in_tvm(name):
    spec = targets.get(name)
    spec.check()  # the [expect] table against TVM's own expansion
    canon = spec.canonical()
    cpu = canon if spec.device == "CPU" else canon["host"]
    if name != "host":
        assert cpu["mtriple"] == spec.triple


def test_rpi4_uses_tvm_tag_values():
    canon = targets.get("rpi4").canonical()
    assert (canon["mtriple"], canon["mcpu"], canon["num-cores"]) == ("aarch64-linux-gnu", "cortex-a72", 4)
    assert "+neon" in canon["mattr"]


def test_cpu_details():
    assert targets.get("rpi5").canonical()["mcpu"] == "cortex-a76"
    assert targets.get("jetson-orin").canonical()["mcpu"] == "cortex-a78ae"
    v7 = targets.get("armv7").canonical()
    assert v7["mfloat-abi"] == "hard" and v7["mtriple"] == "armv7l-linux-gnueabihf"
    assert v7["feature.is_aarch64"] is False
    assert targets.get("armv7").zig_target == "arm-linux-gnueabihf"
    assert targets.get("android-arm64").linker == "ndk"


def test_gpu_targets_have_aarch64_host():
    adreno = targets.get("adreno").canonical()
    assert "adreno" in adreno["keys"] and adreno["host"]["mtriple"] == "aarch64-linux-gnu"
    mali = targets.get("mali").canonical()
    assert mali["device"] == "mali" and "gpu" in mali["keys"] and mali["host"]["mtriple"] == "aarch64-linux-gnu"


def test_host_is_resolved_at_run_time():
    import os

    import tvm

    j = targets.get("host").to_json()
    assert j["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert j["num-cores"] == len(os.sched_getaffinity(0))
    assert targets.get("host").runs_here and not targets.get("arm64").runs_here
    # its tuning logs are kept per machine: another CPU or core count is another log
    assert targets.get("host").machine() == f"{j['mcpu']}-{j['num-cores']}cores"
    assert targets.get("arm64").machine() is None


def test_unknown_target_lists_names_and_suggests():
    with pytest.raises(UnknownTargetError) as e:
        targets.get("rpi-4")
    assert "arm64" in str(e.value) and "adreno" in str(e.value)
    assert "'rpi4'" in e.value.hint


def test_target_json_on_command_line():
    spec = targets.get('{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"cortex-a55"}')
    assert spec.linker == "zig" and spec.zig_target == "aarch64-linux-gnu" and spec.device == "CPU"
    v7 = targets.get('{"kind":"llvm","mtriple":"armv7l-linux-gnueabihf","mfloat-abi":"hard"}')
    assert v7.zig_target == "arm-linux-gnueabihf"
    assert targets.get('{"kind":"llvm"}').linker == "system"
    with pytest.raises(UsageError, match="does not parse"):
        targets.get('{"kind": llvm}')
    with pytest.raises(UsageError, match="TVM rejects"):
        targets.get('{"kind":"no-such-kind"}')


def test_user_target_dir_adds_and_overrides(tmp_path, monkeypatch):
    (tmp_path / "myboard.toml").write_text(
        'description = "my board"\nlinker = "zig"\ntriple = "aarch64-linux-gnu"\nzig_target = "aarch64-linux-gnu"\n'
        '[target]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\nmcpu = "cortex-a55"\n')
    (tmp_path / "arm64.toml").write_text('description = "overridden"\n[target]\nkind = "llvm"\n')
    monkeypatch.setenv(targets.ENV_DIRS, str(tmp_path))
    reg = targets.registry()
    assert reg["myboard"].canonical()["mcpu"] == "cortex-a55"
    assert reg["arm64"].description == "overridden"
    assert "rpi4" in reg


def test_expect_mismatch_and_bad_files(tmp_path, monkeypatch):
    (tmp_path / "wrong.toml").write_text('[target]\ntag = "raspberry-pi/4b-aarch64"\n[expect]\nmcpu = "cortex-a53"\n')
    monkeypatch.setenv(targets.ENV_DIRS, str(tmp_path))
    with pytest.raises(UsageError, match="expects 'cortex-a53'"):
        targets.get("wrong").check()
    (tmp_path / "broken.toml").write_text("[target\n")
    with pytest.raises(UsageError, match="cannot read target file"):
        targets.registry()


def test_split_reduction_default_is_read_from_the_target_file(tmp_path, monkeypatch):
    assert targets.get("host").split_reduction is True  # measured there (README, "Split reductions")
    assert not any(targets.get(n).split_reduction for n in ("rpi4", "rpi5", "jetson-orin", "arm64", "mali"))
    (tmp_path / "myboard.toml").write_text('split_reduction = true\n[target]\nkind = "llvm"\nnum-cores = 4\n')
    (tmp_path / "typo.toml").write_text('split_reduction = "yes"\n[target]\nkind = "llvm"\n')
    monkeypatch.setenv(targets.ENV_DIRS, str(tmp_path))
    with pytest.raises(UsageError, match="split_reduction must be true or false, not 'yes'"):
        targets.registry()
    (tmp_path / "typo.toml").unlink()
    assert targets.get("myboard").split_reduction is True


def test_targets_command_prints_table(capsys):
    from c2f_edge.cli import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    table, _, logs = out.strip().partition("\n\n")  # the targets, then the tuning logs with their status
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "TRIPLE", "DEVICE"]
    assert logs.startswith("Tuning logs in ") and "host/" in logs
    names = {r.split()[0] for r in rows}
    assert REQUIRED <= names
    assert any(r.startswith("armv7") and "armv7l-linux-gnueabihf" in r for r in rows)
