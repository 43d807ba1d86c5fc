"""`--plot`: one PNG with the latency histogram and the per-kernel bars (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from c2f_edge.core.errors import MissingDependencyError

TOP_KERNELS = 15


def plot(result: dict, path: str | Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise MissingDependencyError("matplotlib is needed for --plot", hint="pip install matplotlib") from e

    emulated = result["conditions"]["board"]["emulated"]
    rows = [r for r in (result.get("per_op") or []) if r.get("total_ms") is not None][:TOP_KERNELS]
    ncols = 2 if rows else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 5.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.3] if rows else [1]})
    unit = "emulated ms" if emulated else "ms"

    ax = axes[0][0]
    samples = result.get("samples_ms") or []
    lat = result["latency_ms"]
    if samples:
        ax.hist(samples, bins=min(30, max(5, len(samples) // 2)), color="#4C72B0", edgecolor="white")
        for key, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            if lat.get(key) is not None:
                ax.axvline(lat[key], color="black", linestyle=style, linewidth=1,
                           label=f"{key} {lat[key]:.2f} {unit}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"latency per inference ({unit})")
    ax.set_ylabel("samples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Latency, {lat['samples']} samples" + (" (EMULATED)" if emulated else ""))
    ax.grid(axis="y", alpha=0.3)

    if rows:
        ax = axes[0][1]
        names = [_short(r["kernel"]) for r in rows][::-1]
        totals = [r["total_ms"] for r in rows][::-1]
        shares = [r["share"] * 100 for r in rows][::-1]
        bars = ax.barh(range(len(rows)), totals, color="#DD8452")
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        for b, s in zip(bars, shares, strict=True):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {s:.1f}%", va="center", fontsize=7)
        ax.set_xlabel(f"time per inference ({unit}), kernel timed alone x calls")
        summ = result["per_op_summary"]
        ax.set_title(f"Top {len(rows)} kernels (sum of all {summ['kernel_sum_ms']:.1f} ms, "
                     f"end-to-end p50 {_num(summ['end_to_end_ms'])} ms)", fontsize=10)
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)

    c = result["conditions"]
    title = (f"{c['artifact'].get('target')} bundle ({c['artifact'].get('tuning')}) on {c['board']['key']}"
             f"{'  -  EMULATED: not device latencies' if emulated else ''}"
             f"{'' if result['complete'] else '  -  INCOMPLETE'}")
    fig.suptitle(title, fontsize=11, color="firebrick" if emulated or not result["complete"] else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(name: str, n: int = 42) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"
