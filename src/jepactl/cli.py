"""The ``jepactl`` command line: thin commands that parse, build a recipe and call one function.

Results go to stdout (a rich table, or JSON with ``--json``); logs and progress go to stderr.
A user error prints one line and exits 2 (``--debug`` shows the traceback); so does an
operating-system error (read-only disk, disk full, permission denied): the user fixes those,
and the line names the path. Anything else exits 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from jepactl.cli_errors import STATE, guard, positive
from jepactl.cli_output import emit, flag
from jepactl.cli_pretrain import pretrain
from jepactl.cli_recipes import recipes_app
from jepactl.command_log import command_log
from jepactl.errors import UserError
from jepactl.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    help="Pretrain, probe, fine-tune, embed and export JEPA models.",
)
app.add_typer(recipes_app, name="recipes")


def run_folder(path: Path) -> Path | None:
    """``path`` when it is a run folder (its logs/ keeps the command's stderr), else None."""
    from jepactl.runs import is_run_dir

    return path if is_run_dir(path) else None


def _show_flags_bare() -> None:
    """typer shows a flag's type (``--help <bool>``) as if it took a value. Our flags set
    ``metavar=""`` (cli_output.flag); the ``--help`` typer adds itself is mended here."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None:
        return

    def display_type_rich(self, ctx):
        return "" if self.is_flag and self.metavar is None else shown(self, ctx)

    option.display_type_rich = display_type_rich


_show_flags_bare()


def _version(value: bool) -> None:
    if value:
        print(f"jepactl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        metavar="",
        help="Print the version and exit.",
    ),
    debug: bool = flag("--debug", help="Show tracebacks for errors."),
    unsafe_pickle: bool = flag(
        "--unsafe-pickle",
        help="Load old pickle-format checkpoints (this can run code "
        "from the file; only for run folders you trust)",
    ),
) -> None:
    STATE["debug"] = debug
    if unsafe_pickle:  # imported only then: checkpoint.py loads torch, slow for `--help`
        from jepactl.checkpoint import allow_unsafe_pickle

        allow_unsafe_pickle()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )


def _checkpoint_option():
    """``--checkpoint``: which of a run folder's checkpoints probe, embed, export and finetune
    load (checkpoint.load_checkpoint_choice)."""
    return typer.Option(
        "last", "--checkpoint", help="last, best (by the online probe) or a step number."
    )


# pretrain (cli_pretrain.py)
app.command(context_settings={"allow_extra_args": False})(pretrain)


# ------------------------------------------------------------------------------- probe


@app.command()
def probe(
    run: Path = typer.Argument(..., help="Run folder (or exported model folder)."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="`probe.key=value` overrides.", show_default=False
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help="Labelled data to train the probe (default: the run's data)."
    ),
    test: Optional[str] = typer.Option(
        None,
        "--test",
        help="Labelled test data (default: the data's test split, else a seeded split).",
    ),
    labels_fraction: float = typer.Option(
        1.0, "--labels-fraction", help="Use this fraction of the training labels."
    ),
    labels: Optional[str] = typer.Option(
        None,
        "--labels",
        help="Label CSV for --data and "
        "--test: record,label (ECG; record = its name in the "
        "folder, no suffix) or file,label (images, SAR chips; "
        "file = its path in the folder, or bare name); a header "
        "row is optional; unlisted items are left out.",
    ),
    random_init: bool = flag("--random-init", help="Probe an untrained encoder of the same shape."),
    which: Optional[str] = typer.Option(None, "--which", help="target (EMA) or context encoder."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat with N seeds; report mean and std."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Few-shot: K labels per class."),
    target: Optional[str] = typer.Option(None, "--target", help="Target column (tabular)."),
    task: Optional[str] = typer.Option(
        None, "--task", help="classification, regression or multilabel."
    ),
    head: Optional[str] = typer.Option(
        None, "--head", help="Probe head, where a method has several (e.g. linear, attentive)."
    ),
    views: Optional[str] = typer.Option(
        None, "--views", help="Views aggregated per image, comma-separated (seq-JEPA: 1,3,5)."
    ),
    rollouts: Optional[int] = typer.Option(
        None, "--rollouts", help="Closed-loop episodes in the simulator (policies; 0: none)."
    ),
    checkpoint: str = _checkpoint_option(),
    features: Optional[str] = typer.Option(
        None,
        "--features",
        help="Embeddings `jepactl embed` wrote (.parquet, a parquet folder, or .npy): probe "
        "them instead of running the encoder; labels from their class column or --labels.",
    ),
    test_features: Optional[str] = typer.Option(
        None,
        "--test-features",
        help="Embeddings of the test data (default: a seeded split of --features).",
    ),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Probe a frozen encoder: linear (logistic regression) and kNN on pooled features.

    Example: `jepactl probe runs/tiny --data ../shared/data/images/mnist/train --test
    ../shared/data/images/mnist/test --labels-fraction 0.1`; unlabelled data with a label
    file: `jepactl probe runs/tiny --data ./images --labels labels.csv`; on embeddings a
    cluster computed: `jepactl probe runs/tiny --features emb/train --test-features
    emb/test` (the same scores as the probe that computes them)
    """

    def go() -> None:
        from jepactl.evaluate.probe import run_probe
        from jepactl.methods.probe_request import ProbeRequest

        if not 0.0 < labels_fraction <= 1.0:
            raise UserError(f"--labels-fraction must be in (0, 1], got {labels_fraction}")
        positive("--seeds", seeds)
        positive("--shots", shots)
        request = ProbeRequest(
            run,
            data,
            test,
            labels_fraction,
            random_init,
            which,
            seeds,
            shots,
            target,
            task,
            head,
            list(overrides or []),
            labels,
            views,
            rollouts,
            checkpoint,
        )
        if test_features is not None and features is None:
            raise UserError("--test-features needs --features (the training embeddings)")
        with command_log(run_folder(run), "probe"):
            if features is not None:
                from jepactl.evaluate.probe import run_feature_probe

                results = run_feature_probe(request, features, test_features)
            else:
                results = run_probe(request)
        settings = {k: v for k, v in vars(request).items() if k != "run"}
        emit(
            "probe",
            results,
            as_json,
            {**settings, "features": features, "test_features": test_features},
            run,
            title=f"probe {run}",
            keep=True,
        )

    guard(go)


# ------------------------------------------------------------------------------- finetune


@app.command()
def finetune(
    run: Path = typer.Argument(..., help="Run folder."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="`finetune.key=value` overrides.", show_default=False
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Labelled training data."),
    test: Optional[str] = typer.Option(None, "--test", help="Labelled test data."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default RUN/finetune-TIME)."
    ),
    random_init: bool = flag("--random-init", help="Train from scratch instead."),
    target: Optional[str] = typer.Option(
        None,
        "--target",
        help="Tabular: the label column (classification or regression, detected from its values).",
    ),
    checkpoint: str = _checkpoint_option(),
    quiet: bool = flag("--quiet", help="No progress output."),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune encoder + linear head end to end (layer-wise lr decay, warmup, cosine).

    Classification reports accuracy; a numeric tabular target is regression (MSE on the
    standardised target) and reports RMSE and R^2.

    Example: `jepactl finetune runs/tiny finetune.epochs=5 finetune.lr=5e-4`
    """

    def go() -> None:
        from jepactl.evaluate.finetune import run_finetune

        with command_log(run_folder(run), "finetune"):
            result = run_finetune(
                run, list(overrides or []), data, test, out, random_init, quiet, target, checkpoint
            )
        emit(
            "finetune",
            result,
            as_json,
            dict(
                overrides=list(overrides or []),
                data=data,
                test=test,
                out=out,
                random_init=random_init,
                target=target,
                checkpoint=checkpoint,
            ),
            run,
            title=f"finetune {run}",
            keep=True,
        )

    guard(go)


# ------------------------------------------------------------------------------- embed


@app.command()
def embed(
    run: Path = typer.Argument(..., help="Run folder or exported model folder."),
    data: str = typer.Option(..., "--data", help="Data to embed."),
    out: str = typer.Option(
        ...,
        "--out",
        help="A .npy or .parquet file, or a folder (no suffix, or ending in /) that becomes a "
        "parquet data set with one part per process.",
    ),
    split: Optional[str] = typer.Option(None, "--split", help="Split to embed (train/test)."),
    which: Optional[str] = typer.Option(None, "--which", help="target (EMA) or context encoder."),
    checkpoint: str = _checkpoint_option(),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Write one pooled embedding per sample, in input order, for pipelines and probes.

    Example: `jepactl embed runs/tiny --data ./images --out emb.parquet`: columns index
    (input order), id (the file), label, class, embedding; a .npy holds the N x D float32
    array and FILE.index.csv the other columns.

    On several processes (GPUs, nodes; --out on a file system they all see) each embeds a
    contiguous slice of the input:
    `accelerate launch --multi_gpu --num_processes 8 -m jepactl embed runs/big --data
    /data/images --out emb/` writes emb/part-00000-of-00008.parquet ... and
    emb/_manifest.json (read it with `pandas.read_parquet("emb")`, in input order); with
    `--out emb.parquet` or `.npy` rank 0 merges the parts into that one file. Then
    `jepactl probe runs/big --features emb/` probes them without recomputing.
    """

    def go() -> None:
        from jepactl.evaluate.embed import run_embed

        with command_log(run_folder(run), "embed"):
            result = run_embed(run, data, out, split, which, checkpoint)
        settings = dict(data=data, out=out, split=split, which=which, checkpoint=checkpoint)
        emit("embed", result, as_json, settings, run)

    guard(go)


# ------------------------------------------------------------------------------- export


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/export)."),
    which: str = typer.Option("target", "--which", help="target, context or predictor."),
    fmt: str = typer.Option(
        "safetensors",
        "--format",
        help="safetensors (jepactl.load_encoder), onnx, or timm (timm.create_model loads it).",
    ),
    checkpoint: str = _checkpoint_option(),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Export a trained module to model.safetensors + config.json (or model.onnx).

    Example: `jepactl export runs/tiny --out exported/` then in Python:
    `jepactl.load_encoder("exported/")`
    """

    def go() -> None:
        from jepactl.export import run_export

        with command_log(run_folder(run), "export"):
            result = run_export(run, out, which, fmt, checkpoint)
        # An earlier checkpoint chosen with --checkpoint is no sign of an unfinished run.
        if checkpoint.strip() == "last" and result["step"] < result["max_steps"]:
            from jepactl.cli_output import stderr

            stderr.print(
                f"[yellow]warning:[/] exporting step {result['step']} of "
                f"{result['max_steps']}: the run has not finished",
                highlight=False,
            )
        settings = dict(out=out, which=which, format=fmt, checkpoint=checkpoint)
        emit("export", result, as_json, settings, run)

    guard(go)


# ------------------------------------------------------------------------------- bench


@app.command()
def bench(
    recipe: str = typer.Argument(..., help="Recipe name, domain or YAML path."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="`section.key=value` overrides.", show_default=False
    ),
    steps: int = typer.Option(20, "--steps", help="Timed steps per repeat."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed warm-up steps."),
    repeats: int = typer.Option(3, "--repeats", help="Timed repeats; the median is reported."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Per-process batch."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16 or fp16."),
    data: Optional[str] = typer.Option(None, "--data", help="Real data instead of synthetic."),
    peak_tflops: Optional[float] = typer.Option(
        None,
        "--peak-tflops",
        help="The device's data-sheet dense peak in this dtype, TFLOP/s, "
        "for mfu_vs_spec (known GPUs are looked up).",
    ),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Measure a recipe's steady-state training throughput and where the step time goes.

    Example: `jepactl bench image/ijepa-cpu --steps 20 --batch-size 64 --precision bf16 --json`
    """

    def go() -> None:
        from jepactl.bench import run_bench
        from jepactl.recipe import load_recipe

        positive("--batch-size", batch_size)
        result = run_bench(
            load_recipe(recipe, list(overrides or [])),
            steps,
            warmup,
            batch_size,
            precision,
            data,
            repeats,
            peak_tflops,
        )
        emit(
            "bench",
            result,
            as_json,
            dict(
                recipe=recipe,
                overrides=list(overrides or []),
                steps=steps,
                warmup=warmup,
                repeats=repeats,
                batch_size=batch_size,
                precision=precision,
                data=data,
                peak_tflops=peak_tflops,
            ),
            recipe=result.get("recipe"),
            title=f"bench {recipe}",
        )

    guard(go)


# ------------------------------------------------------------------------------- report


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders; several are overlaid."),
    out: Path = typer.Option(..., "--out", help="Output folder for the PNGs and index.html."),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Plot runs' metrics (loss, schedules, throughput, collapse monitors, online probes) to
    PNGs, with the probe results kept in each run, and one self-contained index.html.

    Example: `jepactl report runs/a runs/b --out report/` then open `report/index.html`
    """

    def go() -> None:
        from jepactl.report import write_report

        result = write_report(list(runs), out)
        emit(
            "report",
            result,
            as_json,
            dict(runs=[str(r) for r in runs], out=out),
            title=f"report {out}",
        )

    guard(go)


# ------------------------------------------------------------------------------- recipes


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
