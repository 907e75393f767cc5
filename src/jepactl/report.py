"""`jepactl report RUN [RUN ...] --out DIR`: a run's curves as PNGs and one HTML page.

Each run's ``metrics.jsonl`` (a torn last line dropped, as the trainer does) becomes one figure
per group: ``loss.png`` (loss and every other ``*_loss``), ``schedules.png`` (lr, weight decay,
EMA momentum), ``throughput.png`` (samples/s, data wait), ``collapse.png`` (per-dimension std
with the collapse monitor's threshold, effective rank) and ``online_probe.png`` (``online_*`` /
``probe_*`` keys; a run's online-probe baselines, from ``RUN/online_probe.json``, start each
curve at step 0 with the encoder as initialised and add a dashed line for the raw input, so "did
pretraining pay?" reads off one figure). A figure none of the runs has a key of is not made; a
key a run lacks is absent from its curves. Several runs are overlaid, one colour per run, and
the legend sits below the panels so it never covers a curve. The probe results that ``probe``
and ``finetune`` keep in ``RUN/probes/*.json`` become one table (``probe_results.csv``), and
``index.html`` holds everything (the PNGs embedded) so it can be mailed or opened anywhere.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot).
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jepactl.cli_output import PROBES_DIR
from jepactl.errors import UserError
from jepactl.monitor import CollapseWatch
from jepactl.output_paths import StagedFiles, check_writable_folder

log = logging.getLogger(__name__)

COLLAPSE_RATIO = CollapseWatch().ratio  # the trainer's monitor: std below ratio x its peak
X_LABEL = "optimizer step"
COLORS = [f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink")] + [
    f"tab:{c}" for c in ("gray", "olive", "cyan")
]
# y-axis labels of the known keys; any other key is labelled by its name
Y_LABELS = {
    "loss": "loss",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "momentum": "EMA momentum",
    "samples_per_s": "samples / s",
    "data_wait_fraction": "fraction of step time",
    "embed_std": "mean per-dimension std",
    "effective_rank": "effective rank",
}
TITLES = {
    "lr": "learning rate (lr)",
    "weight_decay": "weight decay (weight_decay)",
    "momentum": "EMA momentum (momentum)",
    "samples_per_s": "throughput (samples_per_s)",
    "data_wait_fraction": "waiting for data (data_wait_fraction)",
    "embed_std": "per-dimension std (embed_std)",
    "effective_rank": "effective rank (effective_rank)",
}


@dataclass
class RunCurves:
    """One run's metrics: ``label`` names it in legends (the folder's name, or parent/name
    where two runs share one)."""

    path: Path
    label: str
    recipe: Optional[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    # the online probe's {"step_0": {...}, "raw_input": {...}} (evaluate/online.py), or {}
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        return {k for r in self.records for k in r}

    def baseline(self, which: str, key: str) -> Optional[float]:
        """The ``which`` baseline ("step_0" or "raw_input") of metrics key ``key``, or None."""
        if not key.startswith("online_"):
            return None
        value = self.baselines.get(which, {}).get(key.removeprefix("online_"))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """Return (steps, values) of ``key``, from step 0 where the run has its baseline;
        records without it, or with a value that is not a finite number, are left out."""
        steps, values = [], []
        first = self.baseline("step_0", key)
        if first is not None:
            steps.append(0)
            values.append(first)
        for number, record in enumerate(self.records, 1):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            steps.append(record.get("step", number))
            values.append(float(value))
        return steps, values


def load_runs(runs: list[Path]) -> list[RunCurves]:
    """Read each run's metrics.jsonl and recipe name; a folder without metrics.jsonl is a
    UserError naming it."""
    from jepactl.train import read_metrics

    if not runs:
        raise UserError("report needs at least one run folder")
    paths = [Path(r) for r in runs]
    for path in paths:
        if not path.is_dir():
            raise UserError(f"run folder '{path}' does not exist")
        if not (path / "metrics.jsonl").is_file():
            raise UserError(
                f"'{path}' has no metrics.jsonl: not a run folder, or a run that has not "
                "logged a step yet"
            )
    labels = run_labels(paths)
    return [
        RunCurves(
            path,
            label,
            _recipe_name(path),
            read_metrics(path / "metrics.jsonl"),
            _baselines(path),
        )
        for path, label in zip(paths, labels)
    ]


def _baselines(run: Path) -> dict[str, dict[str, Any]]:
    """The online probe's baselines kept in ``RUN/online_probe.json``; {} without them."""
    try:
        baselines = json.loads((run / "online_probe.json").read_text()).get("baselines")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(baselines, dict):
        return {}
    return {k: v for k, v in baselines.items() if isinstance(v, dict)}


def run_labels(paths: list[Path]) -> list[str]:
    """The folders' names; where two share a name, parent/name (the full path if that too is
    shared)."""
    resolved = [Path(p).resolve() for p in paths]
    names = [p.name or str(p) for p in resolved]
    labels = [
        f"{p.parent.name}/{p.name}" if names.count(name) > 1 else name
        for p, name in zip(resolved, names)
    ]
    return [str(p) if labels.count(label) > 1 else label for p, label in zip(resolved, labels)]


def _recipe_name(run: Path) -> Optional[str]:
    from jepactl.recipe import read_yaml

    try:
        name = read_yaml(run / "recipe.yaml").get("name")
    except UserError:  # no or unreadable recipe: the curves are drawn regardless
        return None
    return None if name is None else str(name)


# --------------------------------------------------------------------------------- figures


def figure_groups(keys: set[str]) -> dict[str, list[str]]:
    """Return figure file name -> the keys it plots, for the keys some run logged."""
    losses = ["loss"] + sorted(k for k in keys if k.endswith("_loss") and k != "loss")
    groups = {
        "loss.png": losses,
        "schedules.png": ["lr", "weight_decay", "momentum"],
        "throughput.png": ["samples_per_s", "data_wait_fraction"],
        "collapse.png": ["embed_std", "effective_rank"],
        "online_probe.png": sorted(k for k in keys if k.startswith(("online_", "probe_"))),
    }
    present = {name: [k for k in group if k in keys] for name, group in groups.items()}
    return {name: group for name, group in present.items() if group}


FIGURE_TITLES = {
    "loss.png": "Training loss",
    "schedules.png": "Schedules",
    "throughput.png": "Throughput",
    "collapse.png": "Collapse monitors",
    "online_probe.png": "Online probes",
}


def build_figures(runs: list[Path] | list[RunCurves]) -> dict[str, Figure]:
    """Return figure file name -> matplotlib Figure (Agg canvas) for ``runs``: run folders,
    or runs already read by ``load_runs``."""
    if runs and all(isinstance(r, RunCurves) for r in runs):
        curves = list(runs)
    else:
        curves = load_runs(list(runs))
    keys = set().union(*(run.keys() for run in curves))
    return {
        name: _figure(FIGURE_TITLES[name], group, curves)
        for name, group in figure_groups(keys).items()
    }


def _figure(title: str, keys: list[str], runs: list[RunCurves]) -> Figure:
    cols = 1 if len(keys) == 1 else 2
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.4 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    # later runs drawn thinner, so that a run whose curve another covers still shows
    lws = [max(1.0, 2.6 - 0.6 * i) if len(runs) > 1 else 1.5 for i in range(len(runs))]
    for ax, key in zip(axes, keys):
        for index, run in enumerate(runs):
            steps, values = run.series(key)
            if steps:
                ax.plot(
                    steps, values, color=COLORS[index % len(COLORS)], lw=lws[index], label=run.label
                )
        if key == "embed_std":
            _collapse_thresholds(ax, runs)
        _raw_input_lines(ax, key, runs)
        ax.set_title(TITLES.get(key, key), fontsize=10)
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(Y_LABELS.get(key, key))
        ax.grid(True, alpha=0.3)
        if key == "data_wait_fraction":
            ax.set_ylim(bottom=0)
    which = runs[0].label if len(runs) == 1 else f"{len(runs)} runs"
    fig.suptitle(f"{title}: {which}")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:  # below the panels (constrained layout keeps room), never over a curve
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=min(len(handles), 3),
            frameon=False,
            fontsize=9,
        )
    return fig


def _raw_input_lines(ax, key: str, runs: list[RunCurves]) -> None:
    """A dashed line at the raw input's score of ``key``: one grey line where every run
    measured the same value (seeds of one recipe on one data set), else one per run. Scores
    only: the raw input's RankMe (hundreds of pixel dimensions) would flatten the features'."""
    if not key.endswith("_accuracy"):
        return
    values = [(index, run, run.baseline("raw_input", key)) for index, run in enumerate(runs)]
    values = [(index, run, value) for index, run, value in values if value is not None]
    if not values:
        return
    if len({round(value, 9) for _, _, value in values}) == 1:
        ax.axhline(values[0][2], color="0.35", ls="--", lw=1.2, label="raw input")
        return
    for index, run, value in values:
        ax.axhline(
            value,
            color=COLORS[index % len(COLORS)],
            ls="--",
            lw=1.0,
            label=f"raw input ({run.label})",
        )


def _collapse_thresholds(ax, runs: list[RunCurves]) -> None:
    """A dashed line per run at the collapse monitor's threshold (``COLLAPSE_RATIO`` of the
    run's largest std); a log axis, so that a 100-fold fall is as visible as its start."""
    lowest = math.inf
    for index, run in enumerate(runs):
        _, values = run.series("embed_std")
        if not values:
            continue
        threshold = COLLAPSE_RATIO * max(values)
        lowest = min(lowest, min(values), threshold)
        label = "collapse threshold" if len(runs) == 1 else f"collapse threshold ({run.label})"
        ax.axhline(threshold, color=COLORS[index % len(COLORS)], ls="--", lw=1.0, label=label)
    if math.isfinite(lowest) and lowest > 0:
        ax.set_yscale("log")


# ----------------------------------------------------------------------------- probe table


def probe_rows(runs: list[RunCurves]) -> list[dict[str, Any]]:
    """One row per ``RUN/probes/*.json``: run, command, time, encoder, and the scalar metrics
    (not their ``_std`` / ``_per_seed``). An unreadable file is skipped with a warning."""
    rows = []
    for run in runs:
        for path in sorted((run.path / PROBES_DIR).glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                results = doc["results"]
                if not isinstance(results, dict):
                    raise TypeError("results is not a mapping")
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("skipped the probe result %s: %s", path, err)
                continue
            row: dict[str, Any] = {
                "run": run.label,
                "command": doc.get("command", ""),
                "time": _stamp_time(path),
                "encoder": results.get("encoder", ""),
            }
            for key, value in results.items():
                if key.endswith(("_std", "_per_seed")) or key in row:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[key] = value
            rows.append(row)
    return rows


def _stamp_time(path: Path) -> str:
    """The UTC time in the file's name (YYYYmmdd-HHMMSS-ffffff-command.json), else its mtime."""
    try:
        when = datetime.datetime.strptime(path.name[:22], "%Y%m%d-%H%M%S-%f")
    except ValueError:
        when = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------------- output


def write_report(runs: list[Path], out: Path) -> dict[str, Any]:
    """Write the PNGs, ``probe_results.csv`` (when there are probe results) and ``index.html``
    to ``out``; return ``{"out", "figures", "runs", "probe_results"}``."""
    curves = load_runs(runs)
    out = Path(out)
    check_writable_folder(out, "--out")
    figures = build_figures(curves)
    rows = probe_rows(curves)
    images: dict[str, bytes] = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        images[name] = buffer.getvalue()
    with StagedFiles() as stage:
        for name, data in images.items():
            stage.path(out / name).write_bytes(data)
        if rows:
            with stage.path(out / "probe_results.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=_columns(rows), restval="")
                writer.writeheader()
                writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        stage.path(out / "index.html").write_text(_html(curves, images, rows))
    return {
        "out": str(out),
        "figures": list(images),
        "runs": len(curves),
        "probe_results": len(rows),
    }


def _html(runs: list[RunCurves], images: dict[str, bytes], rows: list[dict[str, Any]]) -> str:
    esc = html.escape
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>jepactl report</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "img{max-width:100%;display:block;margin:1em 0}</style></head><body>",
        "<h1>jepactl report</h1>",
        f"<p>Made {esc(when)}.</p>",
        "<h2>Runs</h2>",
        "<table><tr><th>run</th><th>recipe</th><th>folder</th><th>last step</th></tr>",
    ]
    for run in runs:
        steps = [r.get("step") for r in run.records if isinstance(r.get("step"), int)]
        last = max(steps) if steps else ""
        parts.append(
            f"<tr><td>{esc(run.label)}</td><td>{esc(run.recipe or '')}</td>"
            f"<td>{esc(str(run.path))}</td><td class=num>{last}</td></tr>"
        )
    parts.append("</table>")
    parts.append("<h2>Probe results</h2>")
    if rows:
        columns = _columns(rows)
        parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
        for row in rows:
            cells = []
            for column in columns:
                value = row.get(column, "")
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                cells.append(f"<td{' class=num' if numeric else ''}>{esc(_cell(value))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    else:
        parts.append(
            f"<p>None yet: <code>jepactl probe RUN</code> keeps its result in "
            f"<code>RUN/{PROBES_DIR}/</code>.</p>"
        )
    parts.append("<h2>Curves</h2>")
    if not images:
        parts.append("<p>No metrics to plot.</p>")
    for name, data in images.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"<h3>{esc(FIGURE_TITLES.get(name, name))}</h3>")
        parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{esc(name)}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
