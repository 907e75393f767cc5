"""`jepactl report`: figures with the runs' series, the HTML page, the probe table; and `probe`
keeping its --json document in the run folder."""

from __future__ import annotations

import json

import pytest
from matplotlib.image import imread
from test_concepts_cli import TINY as TINY_CONCEPTS
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.cli_output import emit, keep_in_run
from jepactl.errors import UserError
from jepactl.monitor import CollapseWatch
from jepactl.report import build_figures, run_labels, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records(offset: float, momentum: bool) -> list[dict]:
    out = []
    for step in (10, 20, 30, 40):
        record = {
            "step": step,
            "loss": offset + 1.0 / step,
            "pred_loss": 0.5 / step,
            "lr": 1e-3 * step / 40,
            "samples_per_s": 100.0 + step,
            "data_wait_fraction": 0.1,
            "embed_std": 0.4 / step,
            "effective_rank": 8.0 - step / 10,
        }
        if momentum:
            record["momentum"] = 0.99 + step / 10000
        out.append(record)
    return out


def fake_run(folder, lines: list[dict], torn: bool = False, probes: list[dict] = ()):
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(f"name: image/{folder.name}-recipe\nmethod: ijepa\n")
    text = "".join(json.dumps(r) + "\n" for r in lines)
    if torn:  # the trainer died mid-write
        text += '{"step": 50, "loss": 9'
    (folder / "metrics.jsonl").write_text(text)
    for number, doc in enumerate(probes):
        (folder / "probes").mkdir(exist_ok=True)
        name = f"2025010{number + 1}-120000-000000-{doc['command']}.json"
        (folder / "probes" / name).write_text(json.dumps(doc))
    return folder


def probe_doc(command: str, **results) -> dict:
    return {"command": command, "run": "x", "recipe": "r", "results": results, "settings": {}}


@pytest.fixture
def two_runs(tmp_path):
    alpha = fake_run(
        tmp_path / "alpha",
        records(1.0, momentum=True),
        probes=[
            probe_doc(
                "probe",
                encoder="target",
                linear_acc=0.875,
                linear_acc_std=0.0,
                linear_acc_per_seed=[0.875],
                knn_acc=0.5,
                ranked="concept",
            ),
            probe_doc("finetune", encoder="random-init", accuracy=0.25),
        ],
    )
    beta = fake_run(tmp_path / "beta", records(2.0, momentum=False), torn=True)
    return alpha, beta


def panel(fig, key):
    """The panel of metric ``key``: titled ``key`` or ``description (key)``."""
    (ax,) = [
        ax
        for ax in fig.axes
        if ax.get_visible() and (ax.get_title() == key or ax.get_title().endswith(f"({key})"))
    ]
    return ax


def test_figures_overlay_the_runs_series_with_a_legend_and_the_collapse_threshold(two_runs):
    figures = build_figures(list(two_runs))
    assert list(figures) == ["loss.png", "schedules.png", "throughput.png", "collapse.png"]

    loss = panel(figures["loss.png"], "loss")
    assert [line.get_label() for line in loss.get_lines()] == ["alpha", "beta"]
    alpha, beta = loss.get_lines()
    assert list(alpha.get_xdata()) == [10, 20, 30, 40]  # beta's torn line 50 is dropped
    assert list(beta.get_xdata()) == [10, 20, 30, 40]
    assert list(alpha.get_ydata()) == pytest.approx([1.0 + 1 / s for s in (10, 20, 30, 40)])
    assert list(beta.get_ydata()) == pytest.approx([2.0 + 1 / s for s in (10, 20, 30, 40)])
    assert len(panel(figures["loss.png"], "pred_loss").get_lines()) == 2  # other *_loss keys

    momentum = panel(figures["schedules.png"], "momentum")  # only alpha logged it
    assert [line.get_label() for line in momentum.get_lines()] == ["alpha"]
    assert "(weight_decay)" not in [ax.get_title() for ax in figures["schedules.png"].axes]

    std = panel(figures["collapse.png"], "embed_std")
    thresholds = [line for line in std.get_lines() if "collapse threshold" in line.get_label()]
    assert len(thresholds) == 2 and all(line.get_linestyle() == "--" for line in thresholds)
    peak = 0.4 / 10
    assert list(thresholds[0].get_ydata()) == pytest.approx([CollapseWatch().ratio * peak] * 2)

    for name, fig in figures.items():
        assert fig.get_suptitle(), name
        assert len(fig.legends) == 1, name  # one figure legend, outside the panels
        labels = [text.get_text() for text in fig.legends[0].get_texts()]
        assert labels[:2] == ["alpha", "beta"], name
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        for ax in fig.axes:
            if ax.get_visible():
                assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel(), (name, ax)
                assert ax.get_window_extent().y0 > legend.y1, name  # below, never over a curve


def test_online_probe_keys_get_their_figure(tmp_path):
    lines = [
        {"step": s, "loss": 1.0, "online_linear_acc": s / 10, "probe_knn": 0.5} for s in (1, 2)
    ]
    run = fake_run(tmp_path / "run", lines)
    figures = build_figures([run])
    assert list(figures) == ["loss.png", "online_probe.png"]
    acc = panel(figures["online_probe.png"], "online_linear_acc")
    assert list(acc.get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.2])
    assert len(panel(figures["online_probe.png"], "probe_knn").get_lines()) == 1


def baselined_run(folder, step0: float, raw: float, scores=(0.6, 0.7)):
    lines = [
        {"step": s, "loss": 1.0, "online_linear_accuracy": v, "online_rankme": 3.0}
        for s, v in zip((5, 10), scores)
    ]
    run = fake_run(folder, lines)
    baselines = {
        "step_0": {"linear_accuracy": step0, "rankme": 2.0},
        "raw_input": {"linear_accuracy": raw, "rankme": 700.0},
    }
    (run / "online_probe.json").write_text(json.dumps({"every": 5, "baselines": baselines}))
    return run


def test_online_probe_baselines_start_the_curve_and_draw_the_raw_input_line(tmp_path):
    seeds = [baselined_run(tmp_path / f"s{i}", 0.3 + i / 100, 0.55) for i in range(2)]
    other = baselined_run(tmp_path / "other", 0.2, 0.45)
    ax = panel(build_figures(seeds)["online_probe.png"], "online_linear_accuracy")
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_xdata()) for line in solid] == [[0, 5, 10], [0, 5, 10]]
    assert [line.get_ydata()[0] for line in solid] == pytest.approx([0.30, 0.31])
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    # seeds of one data set share the raw input: one grey line, not one per run
    assert [(line.get_label(), line.get_ydata()[0]) for line in dashed] == [("raw input", 0.55)]
    # no raw-input line on RankMe: 700 pixel dimensions would flatten the features' 2-3
    rank = panel(build_figures(seeds)["online_probe.png"], "online_rankme")
    assert [line.get_linestyle() for line in rank.get_lines()] == ["-", "-"]
    ax = panel(build_figures([*seeds, other])["online_probe.png"], "online_linear_accuracy")
    dashed = [line.get_label() for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed == ["raw input (s0)", "raw input (s1)", "raw input (other)"]


def test_write_report_writes_pngs_a_probe_table_and_one_self_contained_page(two_runs, tmp_path):
    out = tmp_path / "report"
    result = write_report(list(two_runs), out)
    assert result == {
        "out": str(out),
        "figures": ["loss.png", "schedules.png", "throughput.png", "collapse.png"],
        "runs": 2,
        "probe_results": 2,
    }
    for name in result["figures"]:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
        height, width, _ = imread(out / name).shape
        assert height > 100 and width > 100
    assert not (out / "online_probe.png").exists()

    page = (out / "index.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 4
    assert "image/alpha-recipe" in page and "image/beta-recipe" in page  # the runs listed
    table = page.split("<h2>Probe results</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header + 2 results
    for cell in ("alpha", "probe", "finetune", "target", "random-init", "0.875", "0.25"):
        assert f">{cell}</td>" in table, cell
    assert "linear_acc_std" not in table and "per_seed" not in table and "ranked" not in table
    assert "2025-01-01 12:00:00 UTC" in table

    csv_rows = (out / "probe_results.csv").read_text().splitlines()
    assert csv_rows[0] == "run,command,time,encoder,linear_acc,knn_acc,accuracy"
    assert len(csv_rows) == 3


def test_runs_sharing_a_name_are_labelled_parent_and_name(tmp_path):
    first = fake_run(tmp_path / "a" / "run", records(1.0, True))
    second = fake_run(tmp_path / "b" / "run", records(2.0, True))
    assert run_labels([first, second]) == ["a/run", "b/run"]
    loss = panel(build_figures([first, second])["loss.png"], "loss")
    assert [line.get_label() for line in loss.get_lines()] == ["a/run", "b/run"]


def test_a_folder_without_metrics_is_a_user_error_naming_it(two_runs, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(UserError, match="not-a-run.*metrics.jsonl"):
        write_report([two_runs[0], empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_command_json_and_one_line_error(two_runs, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", *map(str, two_runs), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["command", "run", "recipe", "results", "settings"]
    assert doc["command"] == "report" and doc["results"]["runs"] == 2
    assert sorted(doc["results"]["figures"]) == sorted(p.name for p in out.glob("*.png"))
    assert doc["settings"]["out"] == str(out)

    missing = tmp_path / "missing"
    failed = CliRunner().invoke(app, ["report", str(missing), "--out", str(out)])
    assert failed.exit_code == 2
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0], failed.stderr


def test_kept_result_needs_a_run_folder_and_a_failed_write_only_warns(tmp_path, capsys):
    doc = probe_doc("probe", encoder="target", acc=0.5)
    export = tmp_path / "export"  # no recipe.yaml / metrics.jsonl: nothing is written
    export.mkdir()
    assert keep_in_run(doc, export) is None
    assert list(export.iterdir()) == []

    run = fake_run(tmp_path / "run", records(1.0, True))
    (run / "probes").write_text("a file where the folder should be")  # cannot be written
    emit("probe", doc["results"], True, {}, run, keep=True)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["results"] == doc["results"]  # printed all the same
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and "warning" in warning[0] and "probes" in warning[0]


@pytest.mark.slow
def test_probe_keeps_its_json_document_in_the_run(tmp_path):
    run = tmp_path / "run"
    invoke = CliRunner().invoke
    args = ["pretrain", "concepts/concept-jepa-cpu", *TINY_CONCEPTS, "model.predictor_depth=1"]
    done = invoke(app, [*args, "--out", str(run), "--max-steps", "2", "--quiet"])
    assert done.exit_code == 0, done.output
    probed = invoke(app, ["probe", str(run), "--json"])
    assert probed.exit_code == 0, probed.output
    (kept,) = (run / "probes").glob("*-probe.json")
    assert json.loads(kept.read_text()) == json.loads(probed.stdout)
    stamp = kept.name[: -len("-probe.json")]
    assert len(stamp) == len("20250101-120000-000000") and stamp[8] == "-"
    assert [p.name for p in (run / "probes").iterdir()] == [kept.name]  # no temporary file

    table = write_report([run], tmp_path / "report")
    assert table["probe_results"] == 1
