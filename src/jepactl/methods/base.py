"""The contract between a method and the trainer.

A method owns its modules and maps a batch to a dict of scalars whose ``"loss"`` is optimised.
It declares which modules are EMA targets of which online modules; it knows nothing about
optimizers, devices or files (design.md, "The flow of data").

Each method module ends with ``SPEC = MethodSpec(...)``: its recipe class and its hooks (how to
build the model, read its data, probe it). Callers look hooks up on the spec, never on the
module; a hook a method lacks is None, and ``spec.require`` turns that into a clear user error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from torch import nn

from jepactl.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from torch.utils.data import Dataset

    from jepactl.methods.probe_request import ProbeRequest
    from jepactl.nn.vit import EncoderConfig
    from jepactl.recipe import LossConfig, Recipe


class PretrainData(NamedTuple):
    """What ``pretrain_data`` returns; unpacks as ``dataset, collate, source = ...``.

    ``dataset`` is indexed by a ``SampleKey`` (data/sampling.py), ``collate`` turns one
    optimizer step's samples into a batch-first dict of tensors, ``source.skipped`` lists
    unreadable files and an optional ``source.notices`` what the reader filled in.
    """

    dataset: Dataset
    collate: Callable[[list], dict[str, torch.Tensor]]
    source: Any


# What a method without the hook has no ..., for ``MethodSpec.require``'s message.
HOOK_NAMES = {
    "build": "torch module to train or export",
    "pretrain_data": "pretraining data reader",
    "eval_data": "labelled data set",
    "has_split": "labelled data splits",
    "synthetic_data": "synthetic data",
    "run_probe": "probe protocol of its own",
    "run_pretrain": "pretraining analysis of its own",
}


@dataclass(frozen=True)
class MethodSpec:
    """One method's contract: its recipe class and hooks (``methods/__init__.py`` maps names).

    Required (every trainable method fills them): ``build(recipe) -> JEPAMethod``,
    ``pretrain_data(recipe, path) -> PretrainData``, ``eval_data(recipe, path, split,
    augment=False, seed=0)`` -> labelled dataset (``i -> (x, y)``, ``.labels``, ``.classes``),
    ``has_split(recipe, path, split) -> bool``. An analysis with its own ``run_pretrain`` (not
    SGD over a data loader) may leave them None. Optional hooks default to None:
    ``synthetic_data(recipe) -> (dataset, collate)`` (``jepactl bench`` without ``--data``),
    ``run_probe(request, recipe) -> dict`` (a probe protocol of its own),
    ``run_pretrain(recipe, run_dir, resume, quiet) -> dict``. ``note`` ends the user error for
    a missing hook when the caller gives no fix. A method whose labels can come from a file
    names the file's rows in ``label_file`` and takes ``eval_data(..., labels=PATH)``.
    """

    name: str
    recipe: type[Recipe]
    build: Callable[[Recipe], JEPAMethod] | None
    pretrain_data: Callable[[Recipe, str | None], PretrainData] | None
    eval_data: Callable[..., Dataset] | None
    has_split: Callable[[Recipe, str | None, str], bool] | None
    synthetic_data: Callable[[Recipe], tuple[Dataset, Callable]] | None = None
    run_probe: Callable[[ProbeRequest, Recipe], dict] | None = None
    run_pretrain: Callable[[Recipe, Path, bool, bool], dict] | None = None
    note: str = ""
    # Probe-time label files (``jepactl probe --labels FILE.csv``): the CSV's rows
    # ("record,label", "file,label"), passed to eval_data as ``labels=FILE``; "" when the
    # method's labels never come from a file, and then ``labels_from`` says what to use instead.
    label_file: str = ""
    labels_from: str = ""
    # Why the trainer's online probe (evaluate/online.py: linear and kNN on pooled features of
    # eval_data) does not apply to this method; "" when it does.
    no_online_probe: str = ""

    def __post_init__(self) -> None:
        for hook in HOOK_NAMES:
            value = getattr(self, hook)
            if value is not None and not callable(value):
                raise TypeError(f"method '{self.name}': hook {hook} is not callable")
        if self.run_pretrain is None:
            missing = [
                h
                for h in ("build", "pretrain_data", "eval_data", "has_split")
                if getattr(self, h) is None
            ]
            if missing:
                raise TypeError(
                    f"method '{self.name}' trains with the shared trainer, so it "
                    f"needs {', '.join(missing)}"
                )

    def require_label_file(self) -> str:
        """Return ``label_file``; a UserError saying what to use instead when it is empty."""
        if not self.label_file:
            raise UserError(
                f"--labels: method '{self.name}' takes no label file: "
                + (self.labels_from or "its labels come with its data")
            )
        return self.label_file

    def require(self, hook: str, fix: str = "") -> Callable:
        """Return hook ``hook``; a UserError naming the method and ``fix`` (or the note) if None.

        ``spec.require("synthetic_data", "pass --data")`` -> "method 'x' has no synthetic
        data: pass --data".
        """
        value = getattr(self, hook)
        if value is None:
            why = fix or self.note
            raise UserError(
                f"method '{self.name}' has no {HOOK_NAMES[hook]}" + (f": {why}" if why else "")
            )
        return value


class JEPAMethod(nn.Module):
    """Base class: subclasses implement ``forward(batch) -> {"loss": ..., ...}``."""

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Return (online, target) module pairs updated as target = m*target + (1-m)*online."""
        return []

    def encoder(self, which: str = "target") -> nn.Module:
        """Return the encoder used for evaluation and export (``target`` or ``context``)."""
        raise NotImplementedError

    def export_modules(self) -> dict[str, nn.Module]:
        """Return the modules ``jepactl export --which`` may write."""
        return {"target": self.encoder("target"), "context": self.encoder("context")}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class PredictorConfig:
    """The recipe's ``predictor`` section of a ContextTargetPredictor (I-JEPA's defaults).

    Each method subclasses it to set its paper's defaults, so every such recipe has the same keys.
    """

    embed_dim: int = 384
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float | None = None  # None: the encoder's model.mlp_ratio
    # False: one predictor sequence per target block, as the references do. True: all blocks of
    # a sample in one sequence (nn/predictor.py says exactly how that differs).
    shared_context: bool = False


class ContextTargetPredictor(JEPAMethod):
    """The masked-latent-prediction layout shared by I-JEPA, DMT-JEPA, ECG-JEPA and T-JEPA.

    A context encoder, its EMA copy as the target encoder (no gradients), and a narrow
    predictor whose positions come from the encoder's tokenizer. ``forward`` reads the input
    tensor ``batch[inputs]`` and the masks of ``masks/collate.py`` (``context``, optional
    ``context_valid``, ``targets``); ``loss`` gives the target normalisation and the loss.
    """

    def __init__(
        self,
        tokenizer_config: dict,
        model: "EncoderConfig",
        predictor: PredictorConfig,
        *,
        inputs: str,
        loss: "LossConfig",
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.loss_config = loss
        from jepactl.nn.predictor import MaskedPredictor
        from jepactl.nn.vit import TransformerEncoder

        self.context_encoder = TransformerEncoder(tokenizer_config, model)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.predictor = MaskedPredictor(
            model.embed_dim,
            predictor.embed_dim,
            predictor.depth,
            predictor.num_heads,
            self.context_encoder.tokenizer.position_table(predictor.embed_dim),
            mlp_ratio=predictor.mlp_ratio or model.mlp_ratio,
            qkv_bias=model.qkv_bias,
            bias=model.bias,
            norm_eps=model.norm_eps,
            shared_context=predictor.shared_context,
        )

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.context_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        return self.target_encoder if which == "target" else self.context_encoder

    def export_modules(self) -> dict[str, nn.Module]:
        return {
            "target": self.target_encoder,
            "context": self.context_encoder,
            "predictor": self.predictor,
        }

    def refine_targets(self, full: torch.Tensor) -> torch.Tensor:
        """Return the per-token targets (B, N, D) from the target encoder's tokens (no grad)."""
        return full

    def refine_context(self, encoded: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Return the context tokens the predictor reads, from the context encoder's."""
        return encoded

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predict the target tokens of every target set from the context tokens.

        The target encoder sees the whole input without gradients (its tokens LayerNorm-ed when
        ``loss.target_norm`` is layer_norm); the context encoder sees the context tokens only;
        the loss compares the predictor's output with the targets in float32. ``embeddings``
        (B, D) is the mean target token, for the collapse monitors.
        """
        from jepactl.methods.losses import regression_loss
        from jepactl.nn.vit import gather_tokens, layer_norm_targets

        x, context, targets = batch[self.inputs], batch["context"], batch["targets"]
        valid = batch.get("context_valid")
        with torch.no_grad():
            self.target_encoder.eval()
            full = self.target_encoder(x)
            if self.loss_config.target_norm == "layer_norm":
                full = layer_norm_targets(full)
            wanted = gather_tokens(self.refine_targets(full), targets)  # (B, M, T, D)
        encoded = self.refine_context(self.context_encoder(x, context, valid), valid)
        predicted = self.predictor(encoded, context, valid, targets)
        loss = regression_loss(predicted.float(), wanted.float(), self.loss_config.kind)
        return {"loss": loss, "embeddings": full.mean(dim=1).detach()}
