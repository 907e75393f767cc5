"""The learning-order figure: each feature's encoder weight over time, JEPA beside MAE.

One row per objective, one panel per depth. Each curve is a feature's gain divided by its final
value, so every curve ends at 1 and the order in which curves cross ½ (the dashed line, marked
by dotted verticals at the critical times) is the learning order; the final values themselves
are in the legend. Time axes differ between panels on purpose: JEPA's plateaus are orders of
magnitude longer than MAE's (methods.md §7), and only orders within a panel are compared.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

OBJECTIVE_TITLES = {"jepa": "JEPA", "mae": "MAE"}


def plot_weights_over_time(
    path: Path,
    times: np.ndarray,
    gains: np.ndarray,
    objectives: tuple[str, ...],
    depths: tuple[int, ...],
    feature_labels: list[str],
    critical: np.ndarray,
    ratio_label: str,
    ratios: np.ndarray,
    title: str,
) -> None:
    """Write the PNG: ``gains`` (R, P, d) at ``times`` (R, P); ``critical``, ``ratios``
    per model."""
    rows = [o for o in OBJECTIVE_TITLES if o in objectives]
    cols = sorted(set(depths))
    fig = Figure(figsize=(3.3 * len(cols), 2.9 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    colors = [
        "tab:red",
        "tab:blue",
        "tab:green",
        "tab:orange",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:gray",
        "tab:olive",
        "tab:cyan",
    ]
    for p, (objective, depth) in enumerate(zip(objectives, depths)):
        ax = axes[rows.index(objective), cols.index(depth)]
        clock = times[:, p]
        finite = critical[p][np.isfinite(critical[p])]
        horizon = min(clock[-1], 1.6 * finite.max()) if finite.size else clock[-1]
        shown = clock <= horizon * 1.001
        for f, label in enumerate(feature_labels):
            final = gains[-1, p, f]
            curve = gains[:, p, f] / final if final > 0 else gains[:, p, f]
            color = colors[f % len(colors)]
            ax.plot(clock[shown], curve[shown], color=color, lw=1.6, label=f"{label} → {final:.3g}")
            if not math.isnan(critical[p, f]):
                ax.axvline(critical[p, f], color=color, ls=":", lw=1.0)
        ax.axhline(0.5, color="black", ls="--", lw=0.7)
        ax.set_xlim(0, horizon)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"{OBJECTIVE_TITLES[objective]}, L = {depth}", fontsize=10)
        ratio = ratios[p]
        text = f"{ratio_label} = {ratio:.2f}" if not math.isnan(ratio) else f"{ratio_label}: n/a"
        ax.text(
            0.97,
            0.06,
            text,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "0.7", "pad": 2},
        )
        ax.legend(loc="upper left", fontsize=6.5, frameon=False, handlelength=1.2)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
        if cols.index(depth) == 0:
            ax.set_ylabel("‖W̄ e_i‖ / final", fontsize=8)
        if rows.index(objective) == len(rows) - 1:
            ax.set_xlabel("time t = step × lr", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
