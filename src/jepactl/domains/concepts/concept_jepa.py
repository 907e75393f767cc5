"""Concept-JEPA: predict the tail entity's *concept vector* from [head, relation, mask] concepts.

Wang & Sun, "Is the Reversal Curse a Binding Problem?" (methods.md §8, the reference's
``--wernicke_broca`` mode). An entity encoder (the paper's "Wernicke" layers) turns each
entity's tokens into one concept vector: ``encoder: transformer`` with ``encoder_depth`` k
layers over the entity's tokens (k = 0: the token embedding, the mean of them for multi-token
names), or ``encoder: memory``: mean token embedding -> a key-value memory with top-1 selection,
one slot per entity (keys from the frozen mean token embeddings, values trained). Causal
layers (the "Broca" layers) run over the three concepts [head, relation, mask]; the output at
the mask position, normalised, is the predicted concept. The loss is in-batch contrastive
cross-entropy against the encoder's own concept embeddings of the batch's entities: no EMA and
no stop-gradient, the negatives prevent collapse. Because the target concepts themselves are
trained towards the prediction, an atomic fact b1 -r-> b2 writes b2's concept, and the inversion
learned on group A reads b1 back from it: the reversed fact is answered.

Differences from the reference, on purpose: the in-batch candidates are the *distinct* entities
of the batch (heads and tails), so an entity that occurs twice is never its own negative.
Relations and the mask are one-token patches through the same encoder, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.domains.concepts import facts
from jepactl.domains.concepts.facts import FactsDataConfig, FactTable, load_facts
from jepactl.domains.concepts.memory import KeyValueMemory
from jepactl.domains.concepts.mrr import reciprocal_ranks, run_mrr_probe
from jepactl.errors import RecipeError
from jepactl.methods.base import JEPAMethod, MethodSpec, PretrainData
from jepactl.nn.vit import init_transformer_weights, make_blocks
from jepactl.recipe import Recipe


@dataclass
class ConceptModelConfig:
    embed_dim: int = 128
    encoder: Literal["transformer", "memory"] = "transformer"
    encoder_depth: int = 0  # k layers over an entity's tokens; 0 = the token embedding table
    predictor_depth: int = 4  # causal layers over [head, relation, mask]
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # The reference's concept_ln: "rms" (variance-only, its default: only the prediction is
    # normalised) or "layer_norm" (its memory runs: prediction and candidates both normalised).
    concept_norm: Literal["rms", "layer_norm"] = "rms"
    memory_top_k: int = 1
    memory_train_keys: bool = False  # the reference trains values only
    # Learned position embeddings on [head, relation, mask] and on an entity's name tokens in the
    # encoder. Off as in the reference (main.py: BAN_POS_ENCODING = True): the causal mask alone
    # tells the positions apart. With them on, the entangled encoder collapsed (RESULTS.md).
    position_embedding: bool = False


@dataclass
class ConceptJEPARecipe(Recipe):
    domain: str = "concepts"
    method: str = "concept-jepa"
    data: FactsDataConfig = field(default_factory=FactsDataConfig)
    model: ConceptModelConfig = field(default_factory=ConceptModelConfig)


class RMSNorm(nn.Module):
    """Variance-only normalisation without parameters (the reference's default concept_ln)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype)


class ConceptEncoder(nn.Module):
    """Patch index -> concept vector, for entity patches, then relations, then the mask.

    Patch i's tokens are row i of the ``patch_tokens`` buffer (kept in checkpoints so a
    checkpoint can only be loaded with the vocabulary it was trained on).
    """

    def __init__(self, table: FactTable, cfg: ConceptModelConfig) -> None:
        super().__init__()
        dim, width = cfg.embed_dim, table.entity_tokens.shape[1]
        relation_rows = torch.full((len(table.relations) + 1, width), table.pad_token)
        relation_rows[:-1, 0] = table.relation_token(torch.arange(len(table.relations)))
        relation_rows[-1, 0] = table.mask_token
        self.register_buffer("patch_tokens", torch.cat([table.entity_tokens, relation_rows]))
        self.register_buffer(
            "patch_lengths",
            torch.cat([table.entity_lengths, torch.ones(len(relation_rows), dtype=torch.long)]),
        )
        self.num_entities = len(table.entities)
        # Named without "token" so that the trainer applies weight decay to it, as the
        # reference does to GPT-2's wte (its no-decay list is biases and norms only).
        self.vocab_embed = nn.Embedding(table.num_tokens, dim)
        nn.init.normal_(self.vocab_embed.weight, std=0.02)
        self.kind, self.depth = cfg.encoder, cfg.encoder_depth
        self.blocks = make_blocks(
            dim,
            cfg.encoder_depth if cfg.encoder == "transformer" else 0,
            cfg.num_heads,
            cfg.mlp_ratio,
            True,
            True,
            0.0,
            1e-6,
        )
        if len(self.blocks):
            init_transformer_weights(self.blocks, self.blocks)
        self.patch_pos = None
        if len(self.blocks) and cfg.position_embedding:
            self.patch_pos = nn.Parameter(torch.zeros(width, dim))
            nn.init.trunc_normal_(self.patch_pos, std=0.02)
        self.memory = None
        if cfg.encoder == "memory":
            if cfg.encoder_depth:
                raise RecipeError(
                    "recipe key 'model.encoder_depth' must be 0 with "
                    "model.encoder: memory (the memory block is the encoder)"
                )
            self.memory = KeyValueMemory(
                len(self.patch_tokens), dim, cfg.memory_top_k, cfg.memory_train_keys
            )
            # Keys: each patch's mean token embedding; token embeddings stay frozen so the keys
            # keep addressing the same patches (the reference's memory_block_value_only).
            self.vocab_embed.weight.requires_grad_(False)
            self.memory.set_keys(self.mean_vocab_embedding(torch.arange(len(self.patch_tokens))))

    def mean_vocab_embedding(self, index: torch.Tensor) -> torch.Tensor:
        tokens, lengths = self.patch_tokens[index], self.patch_lengths[index]
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]
        embedded = self.vocab_embed(tokens) * valid.unsqueeze(-1)
        return embedded.sum(1) / lengths[:, None].to(embedded.dtype)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """Return the concepts (N, D) of patches ``index`` (N,)."""
        if self.memory is not None:
            return self.memory(self.mean_vocab_embedding(index))
        if not len(self.blocks):
            return self.mean_vocab_embedding(index)
        tokens, lengths = self.patch_tokens[index], self.patch_lengths[index]
        x = self.vocab_embed(tokens)
        if self.patch_pos is not None:
            x = x + self.patch_pos.to(x.dtype)
        # Causal within the patch, as the reference's GPT-2 layers; the concept is read at the
        # patch's last token, which has seen all of it. Padding sits after it, so never seen.
        for block in self.blocks:
            x = block(x, is_causal=True)
        return x[torch.arange(len(index), device=x.device), lengths - 1]

    def relation_index(self, relation: torch.Tensor) -> torch.Tensor:
        return relation + self.num_entities

    @property
    def mask_index(self) -> int:
        return len(self.patch_tokens) - 1


class ConceptPredictor(nn.Module):
    """Causal transformer over the concept sequence [head, relation, mask] -> mask output."""

    def __init__(self, cfg: ConceptModelConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(3, dim)) if cfg.position_embedding else None
        self.blocks = make_blocks(
            dim, cfg.predictor_depth, cfg.num_heads, cfg.mlp_ratio, True, True, 0.0, 1e-6
        )
        init_transformer_weights(self, self.blocks)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        x = sequence if self.pos_embed is None else sequence + self.pos_embed.to(sequence.dtype)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return x[:, -1]


def facts_and_model(method: nn.Module, recipe) -> tuple[FactTable, Any]:
    """Return (the recipe's fact table, its checked model section).

    ``method`` keeps the facts' fingerprint as a buffer, so a checkpoint is never probed on
    other facts.
    """
    table = load_facts(recipe.data)
    cfg = recipe.model
    if cfg.embed_dim % cfg.num_heads:
        raise RecipeError(
            f"recipe key 'model.embed_dim': {cfg.embed_dim} is not divisible "
            f"by model.num_heads={cfg.num_heads}"
        )
    method.register_buffer("facts_fingerprint", torch.tensor(table.fingerprint()))
    return table, cfg


class ConceptJEPA(JEPAMethod):
    def __init__(self, recipe: ConceptJEPARecipe) -> None:
        super().__init__()
        table, cfg = facts_and_model(self, recipe)
        self.encoder_module = ConceptEncoder(table, cfg)
        self.predictor = ConceptPredictor(cfg)
        if cfg.concept_norm == "layer_norm":
            self.concept_norm: nn.Module = nn.LayerNorm(cfg.embed_dim, eps=1e-5)
        else:
            self.concept_norm = RMSNorm()
        self.normalise_candidates = cfg.concept_norm == "layer_norm"

    def encoder(self, which: str = "target") -> nn.Module:
        return self.encoder_module  # one encoder: no EMA copy (methods.md §8)

    def export_modules(self) -> dict[str, nn.Module]:
        return {
            "target": self.encoder_module,
            "context": self.encoder_module,
            "predictor": self.predictor,
        }

    def candidates(self, concepts: torch.Tensor) -> torch.Tensor:
        return self.concept_norm(concepts) if self.normalise_candidates else concepts

    def predict(self, head_concepts: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """Return predicted tail concepts (B, D) from head concepts and relation indices."""
        enc = self.encoder_module
        # Every relation's concept, then the mask's: a handful of patches, encoded once.
        fixed = enc(torch.arange(enc.num_entities, enc.mask_index + 1, device=relation.device))
        sequence = torch.stack(
            [head_concepts, fixed[relation], fixed[-1].expand_as(head_concepts)], dim=1
        )
        return self.concept_norm(self.predictor(sequence))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        head, tail = batch["head"], batch["tail"]
        entities, position = torch.unique(torch.cat([head, tail]), return_inverse=True)
        concepts = self.encoder_module(entities)  # the distinct entities of the batch
        predicted = self.predict(concepts[position[: len(head)]], batch["relation"])
        logits = predicted.float() @ self.candidates(concepts).float().T
        target = position[len(head) :]
        loss = F.cross_entropy(logits, target)
        return {
            "loss": loss,
            "embeddings": predicted.detach(),
            "batch_top1": (logits.argmax(1) == target).float().mean(),
            "candidates": torch.tensor(float(len(entities))),
        }

    @torch.no_grad()
    def reciprocal_ranks(
        self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor, chunk: int = 1024
    ) -> torch.Tensor:
        """Return each fact's reciprocal rank of its tail among *all* entities' concepts."""
        enc = self.encoder_module
        everything = torch.cat(
            [
                enc(torch.arange(s, min(s + chunk, enc.num_entities)))
                for s in range(0, enc.num_entities, chunk)
            ]
        )
        candidates = self.candidates(everything).float()
        ranks = []
        for s in range(0, len(head), chunk):
            h = head[s : s + chunk]
            predicted = self.predict(everything[h], relation[s : s + chunk]).float()
            ranks.append(reciprocal_ranks(predicted @ candidates.T, tail[s : s + chunk]))
        return torch.cat(ranks)

    def candidate_count(self) -> int:
        return self.encoder_module.num_entities

    @torch.no_grad()
    def memory_slot_accuracy(self) -> float | None:
        """Return the fraction of entities whose memory read-out picks their own slot."""
        memory = self.encoder_module.memory
        if memory is None:
            return None
        index = torch.arange(self.encoder_module.num_entities)
        _, slot = memory.select(self.encoder_module.mean_vocab_embedding(index))
        return float((slot[:, 0] == index).float().mean())


def build(recipe: ConceptJEPARecipe) -> ConceptJEPA:
    return ConceptJEPA(recipe)


def run_probe(request, recipe: ConceptJEPARecipe) -> dict:
    """Return train / atomic / test MRR of the tail concept among all entities."""
    return run_mrr_probe(request, recipe, "concept")


def pretrain_data(recipe, path: str | None) -> PretrainData:
    """Return (train + atomic facts, collate, source); ``path`` None generates the facts.
    Shared by the fact methods (concept-JEPA and the causal LM)."""
    return PretrainData(*facts.pretrain_facts(recipe.data, path))


SPEC = MethodSpec(
    "concept-jepa",
    ConceptJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=facts.eval_data,
    has_split=facts.has_split,
    run_probe=run_probe,
    labels_from=facts.LABELS_FROM,
    no_online_probe="concept facts are scored by their MRR (jepactl probe RUN)",
)
