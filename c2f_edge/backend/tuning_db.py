"""Tuning logs: MetaSchedule JSON databases plus a meta.json saying what they were tuned for.

`c2f-edge tune` writes them; `c2f-edge compile` picks one with `find_log` and applies it. A log
is used only when its TVM version, target and model graph match: MetaSchedule itself would just
ignore records whose workloads differ, and the user would get a silently untuned build.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
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


def mismatch(log: TuningLog, target_json: dict, graph_signature: str | None,
             precision: str | None = "fp32") -> str | None:
    """Why `log` must not be used for this build (at `precision`; None: the log's own), or None if it fits."""
    import tvm

    m = log.meta
    if not m:
        return f"no {META} (cannot tell what it was tuned for)"
    tuned_at = m.get("precision", "fp32")  # logs from before --precision are fp32
    if precision is not None and tuned_at != precision:
        return f"tuned at {tuned_at}, building at {precision} (the graph and its kernels differ)"
    if m.get("tvm_version") != tvm.__version__:
        return f"tuned with TVM {m.get('tvm_version')}, this is TVM {tvm.__version__}"
    if canonical_target(m.get("target", {})) != canonical_target(target_json):
        return f"tuned for target {json.dumps(m.get('target'))}, building for {json.dumps(target_json)}"
    if m.get("pipeline_version") != PIPELINE_VERSION:
        return f"tuned with c2f-edge pipeline version {m.get('pipeline_version')}, this is {PIPELINE_VERSION}"
    if graph_signature and m.get("graph_signature") != graph_signature:
        return "tuned for another model graph (graph_signature differs: other variant, input size or opset)"
    return None


def own_target(log: TuningLog, target_json: dict) -> dict:
    """A target's JSON as it was where `log` was tuned: its "@system" values (mcpu, num-cores) from the log."""
    tuned = log.meta.get("target") or {}
    return {k: tuned.get(k) if v == "@system" else v for k, v in target_json.items()}


def tuned_on(log: TuningLog) -> str:
    """Where `log` was measured, i.e. where to re-tune it: "rocketlake, 2 cores (Intel(R) Xeon(R) Processor)"."""
    m = log.meta.get("machine") or {}
    if m.get("kind") == "local":
        return f"{m.get('llvm_mcpu', '?')}, {m.get('cores', '?')} cores ({m.get('cpu', 'unknown CPU')})"
    if m.get("kind") == "rpc":
        return f"its board (RPC {m.get('key') or m.get('server') or '?'})"
    if m.get("kind") == "emulated":  # any machine: `tune --emulated` scores by a model, not by this CPU
        return f"any machine, emulated {m.get('cpu', '?')} (tune --emulated)"
    return f"the machine it was tuned on ({log.path.name})"


def status(log: TuningLog, target_json: dict, graph_signature: str | None = None) -> str:
    """"fits", or "stale: <why>; re-tune on <where>", judged against the target where it was tuned."""
    why = mismatch(log, own_target(log, target_json), graph_signature, precision=None)
    return f"stale: {why}; re-tune on {tuned_on(log)}" if why else "fits"


def log_dir(target_name: str, machine: str | None = None, root: str | os.PathLike | None = None,
            precision: str = "fp32") -> Path:
    """Where `tune` writes and `compile` looks: root/<target>/, or root/<target>/<machine>/ for targets
    measured on this machine (see TargetSpec.machine); root/<target>-fp16/... for fp16 builds."""
    name = target_name if precision == "fp32" else f"{target_name}-{precision}"
    base = Path(root if root is not None else default_root()) / name
    return base / machine if machine else base


def machine_logs(target_dir: str | os.PathLike) -> list[str]:
    """Machines that have a log under a target's directory (tuning_logs/host/<machine>/)."""
    d = Path(target_dir)
    return sorted(p.parent.name for p in d.glob(f"*/{RECORD_FILE}")) if d.is_dir() else []


def log_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Every log directory under a root: root/<target>/ and, for machine targets, root/<target>/<machine>/."""
    root = Path(root if root is not None else default_root())
    return sorted({p.parent for pattern in (f"*/{RECORD_FILE}", f"*/*/{RECORD_FILE}") for p in root.glob(pattern)})


def all_logs(root: str | os.PathLike | None = None) -> list[TuningLog]:
    return [read_log(d) for d in log_dirs(root)]


def find_log(target_name: str, target_json: dict, graph_signature: str | None,
             explicit: str | None = None, root: str | os.PathLike | None = None,
             machine: str | None = None, precision: str = "fp32") -> tuple[TuningLog | None, str]:
    """Pick the tuning log for a build. Returns (log or None, a one-line note for the user/manifest).

    explicit: None (look in `log_dir(target_name, machine, root)`), "none" (build untuned on purpose),
    or a directory. An explicit log that does not fit is an error; an automatic one that does not fit
    is skipped with a note.
    """
    if explicit == "none":
        return None, "untuned (--tuning-log none)"
    if explicit is not None:
        log = read_log(explicit)
        why = mismatch(log, target_json, graph_signature, precision)
        if why:
            raise ArtifactError(f"tuning log {explicit} does not fit this build: {why}",
                                hint="re-tune with `c2f-edge tune`, or pass --tuning-log none")
        return log, f"tuned: {log.path} ({log.n_records} records)"
    auto = log_dir(target_name, machine, root, precision)
    if not (auto / RECORD_FILE).is_file():
        others = machine_logs(auto.parent) if machine else []
        seen = f"; logs exist for {', '.join(others)}" if others else ""
        return None, f"untuned (no tuning log at {auto}{seen})"
    log = read_log(auto)
    why = mismatch(log, target_json, graph_signature, precision)
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


# --- reading a log defensively ------------------------------------------------------------------------
# MetaSchedule's JSONDatabase gives up on the whole log at the first line it cannot parse (a record cut
# off by a killed run, a line edited by hand) with a native error; compile skips such lines instead.

def _workload_ok(line: str) -> bool:
    try:
        w = json.loads(line)
    except ValueError:
        return False
    return isinstance(w, list) and len(w) == 2 and all(isinstance(x, str) for x in w)


def _record(line: str):
    """(workload index, the rest) of a record line, or None if it is not one."""
    try:
        r = json.loads(line)
    except ValueError:
        return None
    if isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and isinstance(r[1], list) and len(r[1]) >= 2:
        return r
    return None


@contextlib.contextmanager
def readable(log_dir: str | os.PathLike):
    """(the log directory as MetaSchedule can read it, how many records it has): the directory itself, or
    a temporary copy without the lines it would choke on, each named in one warning (file:line).
    ArtifactError if no record is left."""
    log_dir = Path(log_dir)
    workloads = (log_dir / WORKLOAD_FILE).read_text(errors="replace").splitlines()
    records = (log_dir / RECORD_FILE).read_text(errors="replace").splitlines()
    skipped, kept_workloads, new_index = [], [], {}
    index = 0
    for n, line in enumerate(workloads, 1):
        if not line.strip():
            continue
        if _workload_ok(line):
            new_index[index] = len(kept_workloads)
            kept_workloads.append(line)
        else:
            skipped.append(f"{WORKLOAD_FILE}:{n}")
        index += 1
    kept_records = []
    for n, line in enumerate(records, 1):
        if not line.strip():
            continue
        r = _record(line)
        if r is None or r[0] not in new_index:
            skipped.append(f"{RECORD_FILE}:{n}")
            continue
        kept_records.append(line if new_index[r[0]] == r[0] else json.dumps([new_index[r[0]], r[1]]))
    if not kept_records:
        raise ArtifactError(f"the tuning log {log_dir} has no readable record ({len(skipped)} unreadable lines)",
                            hint="re-run `c2f-edge tune`, or build untuned with --tuning-log none")
    if not skipped:
        yield log_dir, len(kept_records)
        return
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    print(f"warning: skipped {len(skipped)} unreadable line(s) of the tuning log {log_dir}: "
          f"{', '.join(skipped[:5])}{more} (cut off by a killed run, or edited); the other "
          f"{len(kept_records)} records are used", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="c2f-tuning-log-") as d:
        (Path(d) / WORKLOAD_FILE).write_text("".join(w + "\n" for w in kept_workloads))
        (Path(d) / RECORD_FILE).write_text("".join(r + "\n" for r in kept_records))
        yield Path(d), len(kept_records)
