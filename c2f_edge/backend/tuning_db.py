"""Tuning logs: MetaSchedule JSON databases plus a meta.json saying what they were tuned for.

`c2f-edge tune` writes them; `c2f-edge compile` picks one with `find_log` and applies it. A log
is used only when its TVM version, target and model graph match: MetaSchedule itself would just
ignore records whose workloads differ, and the user would get a silently untuned build.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from c2f_edge.backend.pipeline import PIPELINE_VERSION
from c2f_edge.core.errors import ArtifactError

META = "meta.json"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
DEFAULT_ROOT = Path("tuning_logs")
ENV_ROOT = "C2F_EDGE_TUNING_LOGS"


def default_root() -> Path:
    """Where tuning logs live: $C2F_EDGE_TUNING_LOGS, else ./tuning_logs if it exists, else the one
    committed beside the package (a source checkout), so `compile` finds the shipped logs from any cwd."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT])
    shipped = Path(__file__).resolve().parents[2] / "tuning_logs"
    if not DEFAULT_ROOT.is_dir() and shipped.is_dir():
        return shipped
    return DEFAULT_ROOT


@dataclass
class TuningLog:
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def n_records(self) -> int:
        f = self.path / RECORD_FILE
        if not f.is_file():
            return 0
        with open(f) as fh:
            return sum(1 for line in fh if line.strip())

    def describe(self) -> dict:
        return {"path": str(self.path), "records": self.n_records,
                **{k: self.meta.get(k) for k in ("tvm_version", "target_name", "trials", "date", "machine")}}


def canonical_target(target_json: dict | str) -> str:
    """A stable string for comparing targets: TVM's own canonical export, keys sorted."""
    import tvm

    t = tvm.target.Target(target_json if isinstance(target_json, dict) else json.loads(target_json))
    return json.dumps(_plain(t.export()), sort_keys=True)


def _plain(x):
    if hasattr(x, "items"):  # dicts and TVM Maps
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or (hasattr(x, "__iter__") and not isinstance(x, (str, bytes))):
        return [_plain(v) for v in x]  # lists and TVM Arrays
    if isinstance(x, (int, float, bool)) or x is None:
        return x
    return str(x)


def read_log(path: str | os.PathLike) -> TuningLog:
    path = Path(path)
    if not (path / WORKLOAD_FILE).is_file() or not (path / RECORD_FILE).is_file():
        raise ArtifactError(f"{path} is not a tuning log (no {WORKLOAD_FILE} / {RECORD_FILE})",
                            hint="pass a directory written by `c2f-edge tune`, or --tuning-log none")
    meta = {}
    if (path / META).is_file():
        try:
            meta = json.loads((path / META).read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path / META} is not valid JSON ({e.msg})",
                                hint="re-run `c2f-edge tune` or delete the log") from e
    return TuningLog(path, meta)


def mismatch(log: TuningLog, target_json: dict, graph_signature: str | None) -> str | None:
    """Why `log` must not be used for this build, or None if it fits."""
    import tvm

    m = log.meta
    if not m:
        return f"no {META} (cannot tell what it was tuned for)"
    if m.get("tvm_version") != tvm.__version__:
        return f"tuned with TVM {m.get('tvm_version')}, this is TVM {tvm.__version__}"
    if canonical_target(m.get("target", {})) != canonical_target(target_json):
        return f"tuned for target {json.dumps(m.get('target'))}, building for {json.dumps(target_json)}"
    if m.get("pipeline_version") != PIPELINE_VERSION:
        return f"tuned with c2f-edge pipeline version {m.get('pipeline_version')}, this is {PIPELINE_VERSION}"
    if graph_signature and m.get("graph_signature") != graph_signature:
        return "tuned for another model graph (graph_signature differs: other variant, input size or opset)"
    return None


def log_dir(target_name: str, machine: str | None = None, root: str | os.PathLike | None = None) -> Path:
    """Where `tune` writes and `compile` looks: root/<target>/, or root/<target>/<machine>/ for targets
    measured on this machine (see TargetSpec.machine)."""
    base = Path(root if root is not None else default_root()) / target_name
    return base / machine if machine else base


def machine_logs(target_dir: str | os.PathLike) -> list[str]:
    """Machines that have a log under a target's directory (tuning_logs/host/<machine>/)."""
    d = Path(target_dir)
    return sorted(p.parent.name for p in d.glob(f"*/{RECORD_FILE}")) if d.is_dir() else []


def find_log(target_name: str, target_json: dict, graph_signature: str | None,
             explicit: str | None = None, root: str | os.PathLike | None = None,
             machine: str | None = None) -> tuple[TuningLog | None, str]:
    """Pick the tuning log for a build. Returns (log or None, a one-line note for the user/manifest).

    explicit: None (look in `log_dir(target_name, machine, root)`), "none" (build untuned on purpose),
    or a directory. An explicit log that does not fit is an error; an automatic one that does not fit
    is skipped with a note.
    """
    if explicit == "none":
        return None, "untuned (--tuning-log none)"
    if explicit is not None:
        log = read_log(explicit)
        why = mismatch(log, target_json, graph_signature)
        if why:
            raise ArtifactError(f"tuning log {explicit} does not fit this build: {why}",
                                hint="re-tune with `c2f-edge tune`, or pass --tuning-log none")
        return log, f"tuned: {log.path} ({log.n_records} records)"
    auto = log_dir(target_name, machine, root)
    if not (auto / RECORD_FILE).is_file():
        others = machine_logs(auto.parent) if machine else []
        seen = f"; logs exist for {', '.join(others)}" if others else ""
        return None, f"untuned (no tuning log at {auto}{seen})"
    log = read_log(auto)
    why = mismatch(log, target_json, graph_signature)
    if why:
        return None, f"untuned: skipped {auto}: {why}"
    return log, f"tuned: {log.path} ({log.n_records} records)"


def write_meta(work_dir: str | os.PathLike, **fields) -> dict:
    import tvm

    from c2f_edge.core.artifacts import write_json

    path = Path(work_dir) / META
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta.update({"tvm_version": tvm.__version__, "pipeline_version": PIPELINE_VERSION, **fields})
    write_json(path, meta)
    return meta
