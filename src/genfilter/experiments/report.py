"""Tables and figures shared by the experiments (markdown tables, trajectory plots)."""

from __future__ import annotations

__all__ = ["markdown_table", "plot_trajectories"]

import math
from collections.abc import Sequence
from pathlib import Path


def markdown_table(table: dict[str, dict[str, float]], cols: Sequence[str]) -> str:
    """``{row: {column: value}}`` as a markdown table; missing / NaN / None values print as —."""
    lines = ["| filter | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        vals = []
        for c in cols:
            v = row.get(c)
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            vals.append("—" if missing else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot_trajectories(truth, observations, runs, times, path: Path, *, components: int,
                      xlabel: str, title: str) -> Path:
    """Truth, observations (of components observed by a ``Select``) and every run's
    ensemble mean ± spread, one panel per component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    op = observations[0].operator
    observed = op.indices.tolist() if hasattr(op, "indices") else []
    fig, axes = plt.subplots(components, 1, figsize=(10, 2.7 * components), sharex=True)
    axes = [axes] if components == 1 else list(axes)
    for c, ax in enumerate(axes):
        ax.plot(times, truth[:, c], "k-", lw=1.8, label="truth")
        if c in observed:
            j = observed.index(c)
            ax.plot(times, [o.y[j].item() for o in observations], "k.", ms=4, label="observation")
        for name, run in runs.items():
            m, s = run.means[:, c].double(), run.spreads[:, c].double()
            (line,) = ax.plot(times, m, lw=1.1, label=f"{name} mean ± spread")
            ax.fill_between(times, m - s, m + s, color=line.get_color(), alpha=0.2)
        ax.set_ylabel(f"x{c + 1} (model units)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    axes[0].legend(fontsize=8, ncol=3, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
