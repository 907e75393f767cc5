"""The reversal-curse baseline: a causal transformer language model over fact tokens.

Wang & Sun's "standard transformer" (methods.md §8, ``run_normal.sh``): GPT-2-style layers
trained from scratch on the token sequence [head tokens, relation, tail tokens] with next-token
cross-entropy on the tail tokens (the prompt is given, the answer is predicted). Output weights
are tied to the token embeddings, as in GPT-2. Its token-level MRR ranks each tail token
against the whole vocabulary; on the reversed (test) facts it is expected to stay near chance:
the reversal curse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.domains.concepts import facts
from jepactl.domains.concepts.concept_jepa import facts_and_model, pretrain_data
from jepactl.domains.concepts.facts import FactsDataConfig
from jepactl.domains.concepts.mrr import reciprocal_ranks, run_mrr_probe
from jepactl.methods.base import JEPAMethod, MethodSpec
from jepactl.nn.vit import init_transformer_weights, make_blocks
from jepactl.recipe import Recipe


@dataclass
class FactLMConfig:
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # GPT-2 ties the output layer to the token embeddings (the reference's LM). Untied, an
    # entity's input and output vectors are separate parameters: the "inconsistent binding"
    # the paper blames for the reversal curse.
    tie_embeddings: bool = True


@dataclass
class ConceptLMRecipe(Recipe):
    domain: str = "concepts"
    method: str = "concept-lm"
    data: FactsDataConfig = field(default_factory=FactsDataConfig)
    model: FactLMConfig = field(default_factory=FactLMConfig)


class CausalFactLM(JEPAMethod):
    """Token embeddings + learned positions + causal timm blocks + (tied) output head."""

    def __init__(self, recipe: ConceptLMRecipe) -> None:
        super().__init__()
        table, cfg = facts_and_model(self, recipe)
        self.register_buffer("entity_tokens", table.entity_tokens.clone())
        self.register_buffer("entity_lengths", table.entity_lengths.clone())
        self.relation_offset = table.num_tokens - 2 - len(table.relations)
        self.pad_token = table.pad_token
        self.seq_len = 2 * table.entity_tokens.shape[1] + 1
        # Named without "token" so that the trainer applies weight decay to it, as the
        # reference does to GPT-2's wte (its no-decay list is biases and norms only).
        self.vocab_embed = nn.Embedding(table.num_tokens, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(self.seq_len, cfg.embed_dim))
        self.blocks = make_blocks(
            cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, True, True, 0.0, 1e-6
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-5)
        self.output_embed = (
            None if cfg.tie_embeddings else nn.Linear(cfg.embed_dim, table.num_tokens, bias=False)
        )
        init_transformer_weights(self, self.blocks)
        nn.init.normal_(self.vocab_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def encoder(self, which: str = "target") -> nn.Module:
        return self

    def export_modules(self) -> dict[str, nn.Module]:
        return {"target": self, "context": self}

    def sequences(
        self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (tokens, is_tail) (B, L): [head, relation, tail] packed left, pads after."""
        width = self.entity_tokens.shape[1]
        at = torch.arange(self.seq_len, device=head.device)[None]
        head_len = self.entity_lengths[head][:, None]
        tail_len = self.entity_lengths[tail][:, None]
        head_part = self.entity_tokens[head].gather(
            1, at.clamp(max=width - 1).expand(len(head), -1)
        )
        tail_at = (at - head_len - 1).clamp(0, width - 1)
        tail_part = self.entity_tokens[tail].gather(1, tail_at)
        is_tail = (at > head_len) & (at <= head_len + tail_len)
        tokens = torch.where(at < head_len, head_part, torch.full_like(head_part, self.pad_token))
        tokens = torch.where(at == head_len, (relation + self.relation_offset)[:, None], tokens)
        tokens = torch.where(is_tail, tail_part, tokens)
        return tokens, is_tail

    def output_weight(self) -> torch.Tensor:
        """Return the (vocabulary, D) matrix that scores next tokens."""
        return self.vocab_embed.weight if self.output_embed is None else self.output_embed.weight

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.vocab_embed(tokens) + self.pos_embed.to(self.vocab_embed.weight.dtype)
        for block in self.blocks:  # pads sit after every real token: causal attention skips them
            x = block(x, is_causal=True)
        return self.norm(x)

    def tail_logits(self, batch_head, relation, tail) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits over the vocabulary, true token) at every tail-token position."""
        tokens, is_tail = self.sequences(batch_head, relation, tail)
        states = self.hidden(tokens)[:, :-1]  # the state at p predicts the token at p + 1
        wanted = is_tail[:, 1:]
        logits = states[wanted] @ self.output_weight().T
        return logits, tokens[:, 1:][wanted]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, is_tail = self.sequences(batch["head"], batch["relation"], batch["tail"])
        states = self.hidden(tokens)
        wanted = is_tail[:, 1:]
        logits = states[:, :-1][wanted] @ self.output_weight().T
        truth = tokens[:, 1:][wanted]
        loss = F.cross_entropy(logits.float(), truth)
        relation_state = states[torch.arange(len(tokens)), self.entity_lengths[batch["head"]]]
        return {
            "loss": loss,
            "embeddings": relation_state.detach(),
            "token_top1": (logits.argmax(1) == truth).float().mean(),
        }

    @torch.no_grad()
    def reciprocal_ranks(
        self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor, chunk: int = 1024
    ) -> torch.Tensor:
        """Return the reciprocal rank of every tail token among the whole vocabulary."""
        ranks = []
        for s in range(0, len(head), chunk):
            logits, truth = self.tail_logits(
                head[s : s + chunk], relation[s : s + chunk], tail[s : s + chunk]
            )
            ranks.append(reciprocal_ranks(logits.float(), truth))
        return torch.cat(ranks)

    def candidate_count(self) -> int:
        return self.vocab_embed.num_embeddings


def build(recipe: ConceptLMRecipe) -> CausalFactLM:
    return CausalFactLM(recipe)


def run_probe(request, recipe: ConceptLMRecipe) -> dict:
    """Return train / atomic / test token-level MRR of the tail among the vocabulary."""
    return run_mrr_probe(request, recipe, "token")


SPEC = MethodSpec(
    "concept-lm",
    ConceptLMRecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=facts.eval_data,
    has_split=facts.has_split,
    run_probe=run_probe,
    labels_from=facts.LABELS_FROM,
    no_online_probe="concept facts are scored by their MRR (jepactl probe RUN)",
)
