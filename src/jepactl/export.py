"""Export trained modules to ``model.safetensors`` + ``config.json`` (or ONNX), and load them back.

The export is self-contained: ``config.json`` holds the tokenizer description and the encoder
sizes, so :func:`load_encoder` rebuilds the model without the recipe or jepactl's run folder.
Weight names are the module's own (``blocks.0.attn.qkv.weight``), never wrapped by ``module.``
(DDP) or ``_orig_mod.`` (torch.compile). The resolved recipe is stored too, so ``jepactl probe``
and ``jepactl embed`` accept an export folder in place of a run folder.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jepactl.errors import UserError
from jepactl.nn.predictor import MaskedPredictor
from jepactl.nn.tokenizers import build_tokenizer
from jepactl.nn.vit import EncoderConfig, TransformerEncoder
from jepactl.output_paths import StagedFiles, check_writable_folder
from jepactl.recipe import build_dataclass, to_dict
from jepactl.registry import method_spec
from jepactl.runs import TrainedMethod, open_trained_method
from jepactl.version import __version__

FORMAT = "jepactl-export"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state`` with wrapper prefixes stripped and tensors made contiguous."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value.detach().contiguous().cpu()
    return cleaned


def module_config(module: nn.Module, encoder: TransformerEncoder) -> dict[str, Any]:
    """Return what is needed to rebuild ``module`` from config.json alone.

    A predictor's position table comes from the encoder's tokenizer, so that is stored too.
    """
    if isinstance(module, TransformerEncoder):
        return {
            "kind": "encoder",
            "tokenizer": module.tokenizer_config,
            "encoder": asdict(module.config),
        }
    if isinstance(module, MaskedPredictor):
        return {
            "kind": "predictor",
            "predictor": {
                **module.config,
                "tokenizer": encoder.tokenizer_config,
                "patch_size": encoder.config.patch_size,
            },
        }
    raise UserError(
        f"cannot export a {type(module).__name__}: `jepactl export` writes the project's ViT "
        "encoders and predictors; this run's weights stay in its checkpoints/ (safetensors)"
    )


def run_export(
    run: Path,
    out: Path | None,
    which: str = "target",
    fmt: str = "safetensors",
    checkpoint: str = "last",
) -> dict[str, Any]:
    """Export module ``which`` of ``run`` from ``checkpoint`` ("last", "best" or a step number
    as text); return the written paths."""
    if fmt not in ("safetensors", "onnx", "timm"):
        raise UserError(f"--format must be 'safetensors', 'onnx' or 'timm', got '{fmt}'")
    trained = open_trained_method(run, checkpoint=checkpoint)
    recipe, method, step = trained.recipe, trained.method, trained.step
    chosen = chosen_checkpoint(trained, checkpoint)
    source = {"checkpoint": trained.path.name}
    if trained.selected_by is not None:
        source["selected_by"] = trained.selected_by
    modules = method.export_modules()
    if which not in modules:
        raise UserError(f"--which must be one of {', '.join(modules)}, got '{which}'")
    module = modules[which]
    if fmt == "onnx" and not isinstance(module, TransformerEncoder):
        raise UserError("--format onnx exports encoders only (--which target or context)")
    out = out or run / "export"
    check_writable_folder(out, "--out")
    total = recipe.train.max_steps
    if fmt == "timm":
        files = export_timm(module, out, step)
        return {
            "run": str(run),
            "which": which,
            "step": step,
            "max_steps": total,
            **source,
            **files,
        }
    config = {
        "format": FORMAT,
        "jepactl_version": __version__,
        "which": which,
        "step": step,
        "max_steps": recipe.train.max_steps,
        **source,
        **module_config(module, method.encoder("context")),
        "recipe": to_dict(recipe),
    }
    if isinstance(module, TransformerEncoder):
        try:  # which timm model and kwargs rebuild it (`--format timm` writes timm's names)
            config["timm"] = {
                "architecture": TIMM_NAMES.get(module.config.embed_dim, "vit_base_patch16_224"),
                "model_args": timm_model_args(module),
            }
        except UserError:
            pass  # not a 2-D ViT: no timm equivalent
    written = {
        "config": str(out / "config.json"),
        "weights": str(out / "model.safetensors"),
        "card": str(out / "README.md"),
    }
    # Every file goes to a temporary name first and all are renamed together at the end: a full
    # disk leaves the previous export whole, never new config.json with old weights.
    with StagedFiles() as stage:
        if fmt == "onnx":
            export_onnx(module, stage.path(out / "model.onnx"))
            written["onnx"] = str(out / "model.onnx")
        save_file(
            clean_state_dict(module.state_dict()),
            str(stage.path(out / "model.safetensors")),
            metadata={"format": FORMAT, "which": which},
        )
        stage.path(out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        stage.path(out / "README.md").write_text(model_card(run, recipe, which, step, fmt, chosen))
    return {
        "run": str(run),
        "which": which,
        "step": step,
        "max_steps": recipe.train.max_steps,
        **source,
        **written,
    }


def chosen_checkpoint(trained: TrainedMethod, checkpoint: str) -> str | None:
    """Return how the model card names a checkpoint other than the last: None for "last"."""
    if str(checkpoint).strip() == "last":
        return None
    if trained.is_best:
        picked = trained.selected_by or {}
        metric, value = picked.get("metric"), picked.get("value")
        by = f" ({metric} {value:.4g})" if metric and isinstance(value, float) else ""
        return f"the best checkpoint by the online probe{by}"
    return f"the checkpoint chosen with `--checkpoint {str(checkpoint).strip()}`"


def model_card(
    run: Path, recipe, which: str, step: int, fmt: str, chosen: str | None = None
) -> str:
    """Return the export's README.md: what the model is, how it was made, what it scored.

    ``chosen``: how the checkpoint was picked when it is not the run's last (``--checkpoint``).
    """
    total = recipe.train.max_steps
    if chosen is not None:
        note = f": {chosen}"
    else:
        note = "" if step >= total else " (**the run had not finished**)"
    data = getattr(getattr(recipe, "data", None), "path", None) or "the recipe's built-in data"
    lines = [
        f"# {recipe.name or recipe.method} encoder ({which})",
        "",
        f"Exported by jepactl {__version__} from the run `{run.name}` at step {step} of {total}"
        + note
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| method | `{recipe.method}` ({method_spec(recipe.method).recipe.__module__}) |",
        f"| recipe | `{recipe.name}`: {recipe.description} |",
        f"| source | {recipe.source or '-'} |",
        f"| domain | {recipe.domain} |",
        f"| pretraining data | `{data}` |",
        f"| steps x batch | {step} x {recipe.train.batch_size} |",
        f"| format | {fmt}: `model.safetensors`, `config.json` (the full recipe is in it) |",
        "",
        "## Load",
        "",
        "```python",
        "import jepactl",
        "encoder = jepactl.load_encoder('THIS_FOLDER')  # .pooled(x): one vector per sample",
        "```",
        "",
        "`config.json` names the timm model and kwargs that rebuild a ViT image encoder "
        "(`timm`); `jepactl export RUN --format timm` writes weights under timm's names.",
        "",
        "## Probe results kept in the run",
        "",
    ]
    lines += probe_result_lines(run) or ["None: run `jepactl probe RUN` before exporting."]
    lines += [
        "",
        "## Intended use and licence",
        "",
        "A self-supervised encoder for frozen-feature probes, embeddings and fine-tuning on data "
        "like its pretraining data; it was not evaluated for any deployed decision. The weights "
        "derive from the pretraining data above: its licence and terms of use apply to them.",
        "",
    ]
    return "\n".join(lines)


def probe_result_lines(run: Path) -> list[str]:
    """Markdown rows of the probe results saved in ``run/probes/`` (newest last)."""
    rows = []
    for path in sorted((run / "probes").glob("*.json")) if (run / "probes").is_dir() else []:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        results = document.get("results", {})
        scores = ", ".join(
            f"{k} {v:.4g}"
            for k, v in results.items()
            if isinstance(v, float) and not k.endswith(("_std", "_l2"))
        )
        rows.append(f"- `{path.name}` ({results.get('encoder', '?')}): {scores}")
    return rows


# timm's ViT names by width; the model_args in config.json set every size, so the name only
# says which family to build (and is a fair guess of the closest published shape).
TIMM_NAMES = {
    192: "vit_tiny_patch16_224",
    384: "vit_small_patch16_224",
    768: "vit_base_patch16_224",
}
TIMM_NAMES |= {1024: "vit_large_patch16_224", 1280: "vit_huge_patch14_224"}


def timm_model_args(encoder: TransformerEncoder) -> dict[str, Any]:
    """Return ``timm.create_model`` kwargs that rebuild ``encoder`` as a VisionTransformer:
    no class token, positions on the patches only (``no_embed_class``), registers as timm's
    ``reg_tokens``, and pooling the mean of the final-normed patch tokens (``fc_norm=False``),
    which is :meth:`TransformerEncoder.pooled`."""
    cfg, tok = encoder.config, encoder.tokenizer_config
    if tok.get("kind") != "patch2d" or not cfg.bias:
        raise UserError(
            "--format timm writes ViT image encoders (2-D patches, with biases); this run's "
            f"encoder has a {tok.get('kind')!r} tokenizer{'' if cfg.bias else ' and no biases'}"
            ": use --format safetensors"
        )
    size = tok["img_size"]
    return {
        "img_size": list(size) if isinstance(size, (list, tuple)) else int(size),
        "patch_size": cfg.patch_size,
        "in_chans": int(tok["in_chans"]),
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "class_token": False,
        "no_embed_class": True,
        "reg_tokens": cfg.num_registers,
        "global_pool": "avg",
        "fc_norm": False,
        "num_classes": 0,
    }


def timm_state_dict(encoder: TransformerEncoder) -> dict[str, torch.Tensor]:
    """Return ``encoder``'s weights under timm VisionTransformer's names (its blocks are timm's)."""
    renamed = {}
    for key, value in clean_state_dict(encoder.state_dict()).items():
        if key.startswith("tokenizer.proj."):
            key = "patch_embed.proj." + key[len("tokenizer.proj.") :]
        elif key == "registers":
            key = "reg_token"
        renamed[key] = value
    renamed["pos_embed"] = encoder.pos_embed.detach().float().cpu()[None].contiguous()
    return renamed


def export_timm(module: nn.Module, out: Path, step: int) -> dict[str, str]:
    """Write ``out/model.safetensors`` with timm's names and ``out/config.json`` in the layout
    of timm's Hub configs (architecture, model_args); return the written paths."""
    if not isinstance(module, TransformerEncoder):
        raise UserError("--format timm exports encoders only (--which target or context)")
    args = timm_model_args(module)
    config = {
        "architecture": TIMM_NAMES.get(module.config.embed_dim, "vit_base_patch16_224"),
        "model_args": args,
        "num_features": module.config.embed_dim,
        "exported_by": f"jepactl {__version__} (step {step})",
        "load_with": "timm.create_model(config['architecture'], pretrained=True, "
        "pretrained_cfg_overlay=dict(file='model.safetensors'), **config['model_args'])",
    }
    with StagedFiles() as stage:
        save_file(
            timm_state_dict(module),
            str(stage.path(out / "model.safetensors")),
            metadata={"format": "pt"},
        )
        stage.path(out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"config": str(out / "config.json"), "weights": str(out / "model.safetensors")}


class _PooledAndTokens(nn.Module):
    def __init__(self, encoder: TransformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(x)
        return tokens, tokens.mean(dim=1)


def example_input(encoder: TransformerEncoder, batch: int = 2) -> torch.Tensor:
    cfg = encoder.tokenizer_config
    if cfg["kind"] == "patch2d":
        size = cfg["img_size"]
        h, w = (size, size) if isinstance(size, int) else size
        return torch.randn(batch, int(cfg["in_chans"]), h, w)
    if hasattr(encoder.tokenizer, "example_input"):
        return encoder.tokenizer.example_input(batch)
    raise UserError(f"ONNX export does not know the input shape of tokenizer {cfg['kind']!r}")


def export_onnx(encoder: TransformerEncoder, path: Path) -> Path:
    """Write ``encoder`` as ONNX with outputs ``tokens`` (B, N, D) and ``pooled`` (B, D)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'jepactl[onnx]'") from None
    wrapper = _PooledAndTokens(encoder.eval().float())
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but dependable
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (example_input(encoder),),
            str(path),
            input_names=["input"],
            output_names=["tokens", "pooled"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "tokens": {0: "batch"}, "pooled": {0: "batch"}},
        )
    return path


def load_encoder(path: str | Path) -> nn.Module:
    """Return the module exported to ``path``, in eval mode, rebuilt from config.json alone."""
    path = Path(path)
    config_path, weights_path = path / "config.json", path / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(
            f"'{path}' is not an export folder (needs config.json and "
            "model.safetensors; create one with `jepactl export RUN`)"
        )
    config = json.loads(config_path.read_text())
    if config.get("kind") == "encoder":
        module: nn.Module = TransformerEncoder(
            config["tokenizer"], build_dataclass(EncoderConfig, config["encoder"])
        )
    elif config.get("kind") == "predictor":
        args = dict(config["predictor"])
        tokenizer = build_tokenizer(
            args.pop("tokenizer"), args["dim"], args.pop("patch_size"), bias=args["bias"]
        )
        module = MaskedPredictor(position_table=tokenizer.position_table(args["dim"]), **args)
    else:
        raise UserError(f"'{config_path}' has an unknown kind {config.get('kind')!r}")
    weights = load_file(str(weights_path))
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise UserError(
            f"'{weights_path}' does not fit its config.json: "
            + "; ".join(
                f"{what} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
        )
    module.load_state_dict(weights, strict=True)
    return module.eval()
