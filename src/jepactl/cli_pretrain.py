"""``jepactl pretrain``: build the recipe, choose between a fresh start and a resume, train.

``--resume`` continues a run from its recipe.yaml; ``--resume-if-exists`` is the one line a
job script runs for its first start and every requeue: it resumes when the run folder has a
checkpoint, after checking that the command's recipe does not change the model
(recipe.resume_differences). The command is registered on the app in cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jepactl.cli_errors import guard, positive
from jepactl.cli_output import emit, flag
from jepactl.command_log import command_log
from jepactl.errors import UserError


def has_checkpoint(run_dir: Path) -> bool:
    from jepactl.checkpoint import find_checkpoints
    from jepactl.runs import CHECKPOINT_DIR

    return (run_dir / "recipe.yaml").is_file() and bool(find_checkpoints(run_dir / CHECKPOINT_DIR))


def check_same_model(run_dir: Path, given, data: str | None, max_steps: int | None) -> None:
    """Refuse to resume ``run_dir`` with a recipe that changes its model or its training."""
    from jepactl.recipe import resume_differences
    from jepactl.runs import read_run_recipe

    if data is not None:
        given.data.path = data
    if max_steps is not None:
        given.train.max_steps = max_steps
    changed = resume_differences(read_run_recipe(run_dir), given)
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UserError(
            f"cannot resume '{run_dir}' with this recipe: it changes "
            + "; ".join(changed[:3])
            + more
            + ". Use another --out, or the run's own recipe"
        )


def pretrain(
    recipe: str = typer.Argument(
        ...,
        help="Recipe: a domain (`image`), `domain/name`, a YAML path, or a run folder to resume.",
    ),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="`section.key=value` overrides.", show_default=False
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Training data (sets data.path)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/NAME-TIME)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps."),
    resume: bool = flag("--resume", help="Continue the run in --out exactly."),
    resume_if_exists: bool = flag(
        "--resume-if-exists",
        help="Resume --out when it has a checkpoint, else start it: one command for a job's "
        "first start and its requeues (refused if the recipe changed the model).",
    ),
    quiet: bool = flag("--quiet", help="No progress output."),
    as_json: bool = flag("--json", help="Print the result as JSON."),
) -> None:
    """Pretrain a JEPA model.

    Example: `jepactl pretrain image/ijepa-cpu --data ./images --max-steps 300 train.batch_size=64`

    Resume after preemption: `jepactl pretrain image/ijepa-cpu --out runs/tiny --resume`
    """

    def run() -> None:
        from jepactl.output_paths import check_writable_folder
        from jepactl.recipe import load_recipe, read_yaml, recipe_from_dict
        from jepactl.registry import method_spec
        from jepactl.runs import default_run_dir, is_run_dir
        from jepactl.train import pretrain as train

        positive("--max-steps", max_steps)
        extra = list(overrides or [])
        run_dir = out
        if is_run_dir(Path(recipe)):  # `jepactl pretrain RUN --resume`
            run_dir = run_dir or Path(recipe)
        resuming = resume
        if resume_if_exists:
            if resume:
                raise UserError("give --resume or --resume-if-exists, not both")
            if run_dir is None:
                raise UserError("--resume-if-exists needs the run folder: pass --out RUN")
            resuming = has_checkpoint(run_dir)
            if resuming and not is_run_dir(Path(recipe)):
                check_same_model(run_dir, load_recipe(recipe, extra), data, max_steps)
        if resuming:
            if run_dir is None:
                raise UserError("--resume needs the run folder: pass --out RUN (or RUN itself)")
            if not (run_dir / "recipe.yaml").is_file():
                raise UserError(f"cannot resume: '{run_dir}' is not a run folder")
            from jepactl.recipe import apply_override, parse_override

            raw = read_yaml(run_dir / "recipe.yaml")
            for text in extra:
                apply_override(raw, *parse_override(text))
            config = recipe_from_dict(raw)
        else:
            config = load_recipe(recipe, extra)
        if data is not None:
            config.data.path = data
        if max_steps is not None:
            config.train.max_steps = max_steps
        positive("train.max_steps", config.train.max_steps)
        positive("train.batch_size", config.train.batch_size)
        positive("train.log_every", config.train.log_every)
        positive("train.checkpoint_every", config.train.checkpoint_every)
        positive("checkpoint.keep", config.checkpoint.keep)
        micro = getattr(config.train, "micro_batch_size", "auto")  # the linear analyses have none
        if micro != "auto":
            positive("train.micro_batch_size", micro)
        run_dir = run_dir or default_run_dir(config)
        check_writable_folder(run_dir, "--out")  # now, not after the first hour of training
        spec = method_spec(config.method)
        settings = dict(
            recipe=recipe,
            overrides=extra,
            data=data,
            out=out,
            max_steps=max_steps,
            resume=resuming,
            resume_if_exists=resume_if_exists,
        )
        if spec.run_pretrain is not None:  # analyses that are not SGD over a data loader
            from jepactl.run_lock import RunLock

            with RunLock(run_dir), command_log(run_dir, "pretrain"):
                # single-process: train() takes the lock on the main rank
                result = spec.run_pretrain(config, run_dir, resume=resuming, quiet=quiet)
            emit(
                "pretrain",
                result,
                as_json,
                settings,
                run_dir,
                config.name,
            )
            return
        with command_log(run_dir, "pretrain"):
            result = train(config, run_dir, resume=resuming, quiet=quiet)
        emit(
            "pretrain",
            {
                "run": str(result.run_dir),
                "step": result.step,
                "finished": result.finished,
                "last_loss": result.last_loss,
            },
            as_json,
            settings,
            result.run_dir,
            config.name,
        )

    guard(run)
