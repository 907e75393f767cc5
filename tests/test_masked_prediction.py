"""One masked-latent-prediction forward (methods/base.py) for I-JEPA, DMT-JEPA, ECG and T-JEPA.

The reference numbers were recorded with the four per-method ``forward``s before they became
``ContextTargetPredictor.forward``; the shared one must give the same loss, gradients and
embeddings on the same fixed batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from jepactl.data.sampling import BatchPlan
from jepactl.domains.ecg import method as ecg_jepa
from jepactl.domains.image import dmt_jepa, ijepa
from jepactl.domains.tabular import method as tjepa
from jepactl.methods.losses import regression_loss
from jepactl.nn.vit import gather_tokens, layer_norm_targets
from jepactl.recipe import load_recipe

SMALL = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "train.batch_size=4",
    "train.num_workers=0",
]
IMAGE = SMALL + ["data.image_size=16", "model.patch_size=4", "predictor.shared_context=false"]
TABLE = SMALL + ["model.embed_dim=16", "predictor.embed_dim=8"]

# (loss, sum |grad| over parameters, sum |embeddings|) of the old per-method forwards.
REFERENCE = {
    "ijepa-layer_norm-pad": (0.45092982053756714, 10.994307238862472, 103.42842268757522),
    "ijepa-layer_norm-truncate": (0.4509280323982239, 10.993086750155623, 103.42842268757522),
    "ijepa-none-pad": (0.4509321451187134, 10.994324639556236, 103.42873348481953),
    "dmt-layer_norm-pad": (0.48296236991882324, 12.893109641293627, 103.42842268757522),
    "dmt-layer_norm-truncate": (0.482960045337677, 12.891451267874565, 103.42842268757522),
    "ecg-none": (0.8602586388587952, 7.46740224620434, 80.94741907715797),
    "tjepa-none": (1.0189753770828247, 13.167107569677764, 51.99384908378124),
    "tjepa-layer_norm": (1.0190019607543945, 13.167280941463089, 51.99453067779541),
}


def table(path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=64).round(3),
            "b": rng.normal(size=64).round(3),
            "c": rng.choice(["x", "y", "z"], 64),
            "d": rng.integers(1, 5, 64),
        }
    )
    frame.to_csv(path / "t.csv", index=False)
    return str(path / "t.csv")


def setup(case: str, tmp_path):
    """Return (module, recipe, dataset, collate) of a case ``method-target_norm[-ragged]``."""
    method, norm, *ragged = case.split("-")
    if method in ("ijepa", "dmt"):
        name, module = (
            ("image/dmt-jepa-cpu", dmt_jepa) if method == "dmt" else ("image/ijepa-cpu", ijepa)
        )
        recipe = load_recipe(
            name, IMAGE + [f"loss.target_norm={norm}", f"mask.ragged_context={ragged[0]}"]
        )
        return (module, recipe, *ijepa.synthetic_data(recipe))
    if method == "ecg":
        recipe = load_recipe("ecg/ecg-jepa-cpu", SMALL + [f"loss.target_norm={norm}"])
        return (ecg_jepa, recipe, *ecg_jepa.pretrain_data(recipe, None)[:2])
    recipe = load_recipe("tabular/tjepa-cpu", TABLE + [f"loss.target_norm={norm}"])
    return (tjepa, recipe, *tjepa.pretrain_data(recipe, table(tmp_path))[:2])


def fixed_batch(dataset, collate):
    keys = next(iter(BatchPlan(len(dataset), 4, seed=0)))
    return collate([dataset[k] for k in keys])


def old_forward(method, batch: dict, inputs: str, target_norm: str, kind: str):
    """The algorithm the four forwards implemented, written out once more."""
    dmt = isinstance(method, dmt_jepa.DMTJEPA)
    x, context, targets = batch[inputs], batch["context"], batch["targets"]
    valid = batch.get("context_valid")
    with torch.no_grad():
        method.target_encoder.eval()
        full = method.target_encoder(x)
        if target_norm == "layer_norm":
            full = layer_norm_targets(full)
        if dmt:
            method.target_head.eval()
            wanted = gather_tokens(method.target_head.aggregate_neighbours(full), targets)
        else:
            wanted = gather_tokens(full, targets)
    encoded = method.context_encoder(x, context, valid)
    if dmt:
        encoded = method.context_head.refine_context(encoded, valid)
    predicted = method.predictor(encoded, context, valid, targets)
    return regression_loss(predicted.float(), wanted.float(), kind), full.mean(dim=1).detach()


CASES = [
    "ijepa-layer_norm-pad",
    "ijepa-layer_norm-truncate",
    "ijepa-none-pad",
    "dmt-layer_norm-pad",
    "dmt-layer_norm-truncate",
    "ecg-none",
    "tjepa-none",
    "tjepa-layer_norm",
]


@pytest.mark.parametrize("case", CASES)
def test_shared_forward_reproduces_the_recorded_per_method_losses(case, tmp_path):
    module, recipe, dataset, collate = setup(case, tmp_path)
    torch.manual_seed(0)
    method = module.build(recipe)
    out = method(fixed_batch(dataset, collate))
    out["loss"].backward()
    grads = sum(p.grad.double().abs().sum() for p in method.parameters() if p.grad is not None)
    measured = (out["loss"].item(), grads.item(), out["embeddings"].double().abs().sum().item())
    assert measured == pytest.approx(REFERENCE[case], rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_shared_forward_is_the_old_algorithm_bit_for_bit(case, tmp_path):
    module, recipe, dataset, collate = setup(case, tmp_path)
    batch = fixed_batch(dataset, collate)
    inputs = {"ijepa": "images", "dmt": "images", "ecg": "signals", "tjepa": "features"}[
        case.split("-")[0]
    ]
    torch.manual_seed(0)
    method = module.build(recipe)
    torch.manual_seed(0)
    twin = module.build(recipe)
    out = method(batch)
    loss, embeddings = old_forward(twin, batch, inputs, recipe.loss.target_norm, recipe.loss.kind)
    assert torch.equal(out["loss"], loss) and torch.equal(out["embeddings"], embeddings)
    out["loss"].backward()
    loss.backward()
    for (name, p), q in zip(method.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.equal(p.grad, q.grad), name
