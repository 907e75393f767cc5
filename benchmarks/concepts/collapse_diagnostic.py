"""Watch concept-JEPA's entity encoder for the shared-direction collapse (RESULTS.md).

A short training loop with the trainer's AdamW groups, warm-up and grad clip (random batches, no
checkpoints), printing every 50 steps: the loss, in-batch top-1, the norm of the mean concept
over a fixed subset of entities against the mean distance of a concept from that mean (before
and after the concept norm), and the per-dimension std of the predictions across the batch.
A collapsing run shows the mean growing while the spread and the prediction std go to zero.

    python benchmarks/concepts/collapse_diagnostic.py concepts/entangled 400 [KEY=VALUE ...]
    --logit-scale S multiplies the logits by S (an experiment, not a recipe key).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from jepactl.domains.concepts import concept_jepa
from jepactl.recipe import load_recipe
from jepactl.step import build_optimizer
from jepactl.train import build_method


def scaled_forward(scale: float):
    def forward(self, batch):
        head, tail = batch["head"], batch["tail"]
        entities, position = torch.unique(torch.cat([head, tail]), return_inverse=True)
        concepts = self.encoder_module(entities)
        predicted = self.predict(concepts[position[: len(head)]], batch["relation"])
        logits = scale * (predicted.float() @ self.candidates(concepts).float().T)
        target = position[len(head) :]
        return {
            "loss": F.cross_entropy(logits, target),
            "embeddings": predicted.detach(),
            "batch_top1": (logits.argmax(1) == target).float().mean(),
        }

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("steps", type=int)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--logit-scale", type=float, default=1.0)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    if args.logit_scale != 1.0:
        concept_jepa.ConceptJEPA.forward = scaled_forward(args.logit_scale)
    model = build_method(concept_jepa, recipe)
    dataset, collate, _ = concept_jepa.pretrain_data(recipe, None)
    optimizer = build_optimizer(model, recipe, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    encoder, optim = model.encoder_module, recipe.optim
    probe = torch.arange(0, encoder.num_entities, 7)
    for step in range(args.steps + 1):
        lr = optim.start_lr + (optim.lr - optim.start_lr) * min(1.0, step / optim.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randint(len(dataset), (recipe.train.batch_size,), generator=generator)
        batch = collate([dataset[int(i)] for i in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.train.precision == "bf16"):
            out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        if step % 50:
            continue
        with torch.no_grad():
            concepts = encoder(probe).float()
            normed = model.candidates(concepts)
            spread = (concepts - concepts.mean(0)).norm(dim=1).mean()
            normed_spread = (normed - normed.mean(0)).norm(dim=1).mean()
        print(
            f"{step:5d} loss {out['loss'].item():.3f} top1 {out['batch_top1'].item():.3f} "
            f"grad-norm {grad_norm:.2f} mean-concept {concepts.mean(0).norm():.3f} "
            f"spread {spread:.3f} normed-spread {normed_spread:.3f} "
            f"prediction-std {out['embeddings'].float().std(0).mean():.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
