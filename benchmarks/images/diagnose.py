"""Where do an image encoder's features lose class information? Linear and kNN probes of raw
pixels, a random-init encoder and a pretrained one, under several poolings and normalisations.

    python benchmarks/images/diagnose.py RUN --data TRAIN [--test TEST] --out results/NAME
    python benchmarks/images/diagnose.py --recipe image/ijepa-cpu --random-init --data TRAIN ...
    python benchmarks/images/diagnose.py --pixels --data TRAIN ...

Without ``--test`` the probes fit on a seeded 7/8 of TRAIN and score the other 1/8 (the
validation split that chooses settings); with ``--test`` they fit on all of TRAIN and score
TEST. Writes NAME.json and NAME.md (one row per encoder x pooling x normalisation: linear
accuracy, kNN k=20 cosine with a plain vote and with DINO's exp(sim/0.07) vote), plus the
spectrum of each pooled feature set (top-1 / top-10 PCA variance share, RankMe, and how much of
the mean per-sample norm is the shared mean vector).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jepactl.data.images import open_images
from jepactl.evaluate.metrics import accuracy
from jepactl.evaluate.online import rankme
from jepactl.evaluate.probe import fit_logistic
from jepactl.recipe import load_recipe
from jepactl.registry import method_spec
from jepactl.runs import open_trained_method, read_run_recipe

NORMS = ("raw", "centred", "l2", "centred+l2", "standardised")


def split_indices(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (fit, validation) indices: a seeded 1/8 of ``n`` is held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n // 8
    return order[cut:].sort().values, order[:cut].sort().values


def pixels(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (raw pixels in [0, 1], flattened, labels) of an image folder or parquet split."""
    source = open_images(path, None)
    xs = []
    for i in range(len(source)):
        img = source.load(i)
        xs.append(np.asarray(img.convert("L"), dtype=np.float32).reshape(-1) / 255.0)
    return torch.from_numpy(np.stack(xs)), torch.as_tensor(np.asarray(source.labels))


@torch.no_grad()
def encoder_features(encoder, dataset, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Return pooled features of several kinds (fp32, no autocast), and the labels."""
    encoder.eval()
    out: dict[str, list] = {}
    labels = []
    n = len(dataset)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        x = torch.stack([t for t, _ in items])
        labels += [y for _, y in items]
        tokens = encoder.tokenizer(x)
        pos = encoder.pos_embed.to(tokens.dtype)
        h = tokens + pos
        layers = []
        for block in encoder.blocks:
            h = block(h)
            layers.append(h)
        last = encoder.norm(layers[-1])
        side = int(round(last.shape[1] ** 0.5))
        grid = last.reshape(len(x), side, side, -1)
        half = side // 2
        quads = [
            grid[:, :half, :half],
            grid[:, :half, half:],
            grid[:, half:, :half],
            grid[:, half:, half:],
        ]
        feats = {
            "mean_last": last.mean(1),
            "mean_last_prenorm": layers[-1].mean(1),
            "mean_last_minus_pos": encoder.norm(layers[-1] - pos).mean(1),
            "mean_last4": torch.cat([encoder.norm(h).mean(1) for h in layers[-4:]], 1),
            "grid2x2_last": torch.cat([q.mean((1, 2)) for q in quads], 1),
            "tokens_last": last.flatten(1),
            "mean_patch_embed": tokens.mean(1),
        }
        for key, value in feats.items():
            out.setdefault(key, []).append(value.float())
    feats = {k: torch.cat(v) for k, v in out.items()}
    return feats, torch.as_tensor(labels)


def normalise(kind: str, fit: torch.Tensor, score: torch.Tensor):
    """Return (fit, score) normalised with statistics of ``fit`` alone."""
    if kind == "raw":
        return fit, score
    mean = fit.mean(0)
    if kind in ("centred", "centred+l2"):
        fit, score = fit - mean, score - mean
        if kind == "centred+l2":
            fit, score = F.normalize(fit, dim=1), F.normalize(score, dim=1)
        return fit, score
    if kind == "l2":
        return F.normalize(fit, dim=1), F.normalize(score, dim=1)
    if kind == "standardised":
        std = fit.std(0).clamp_min(1e-6)
        return (fit - mean) / std, (score - mean) / std
    raise ValueError(kind)


def knn(fit_x, fit_y, score_x, classes: int, k: int = 20, temperature: float | None = 0.07):
    """Return cosine-kNN predictions; ``temperature`` None: plain majority vote."""
    fit_n = F.normalize(fit_x, dim=1)
    preds = []
    for start in range(0, len(score_x), 1000):
        sims = F.normalize(score_x[start : start + 1000], dim=1) @ fit_n.T
        top, idx = sims.topk(k, dim=1)
        weight = torch.ones_like(top) if temperature is None else (top / temperature).exp()
        votes = torch.zeros(len(top), classes).scatter_add_(1, fit_y[idx], weight)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def linear(fit_x, fit_y, score_x, classes: int, seed: int = 0):
    """Return (predictions, L2): features standardised, L2 chosen on a tenth of ``fit``."""
    mean, std = fit_x.mean(0), fit_x.std(0).clamp_min(1e-6)
    fit_x, score_x = (fit_x - mean) / std, (score_x - mean) / std
    inner_fit, inner_val = split_indices(len(fit_x), seed + 1)
    best, best_acc = None, -1.0
    for wd in (1e-5, 1e-4, 1e-3, 1e-2):
        head = fit_logistic(fit_x[inner_fit], fit_y[inner_fit], classes, wd)
        acc = accuracy(head(fit_x[inner_val]).argmax(1), fit_y[inner_val])
        if acc > best_acc:
            best, best_acc = wd, acc
    head = fit_logistic(fit_x, fit_y, classes, best)
    with torch.no_grad():
        return head(score_x).argmax(1), best


def spectrum(x: torch.Tensor, samples: int = 2000) -> dict:
    """Return PCA variance shares, RankMe and the shared-mean share, on ``samples`` rows."""
    x = x[:samples]
    centred = x - x.mean(0)
    s = torch.linalg.svdvals(centred.double()) ** 2
    share = s / s.sum()
    return {
        "dim": x.shape[1],
        "pca_top1_share": float(share[:1].sum()),
        "pca_top10_share": float(share[:10].sum()),
        "rankme": rankme(x),
        "mean_norm_over_sample_norm": float(x.mean(0).norm() / x.norm(dim=1).mean()),
    }


def evaluate(name, feats, y_fit, y_score, classes, linear_for, rows, spectra, norms=NORMS):
    for pool, x in feats.items():
        fit, score = x["fit"], x["score"]
        spectra[f"{name}/{pool}"] = spectrum(fit)
        for norm in norms:
            f, s = normalise(norm, fit, score)
            row = {"encoder": name, "pooling": pool, "norm": norm}
            row["knn_plain"] = accuracy(knn(f, y_fit, s, classes, temperature=None), y_score)
            row["knn_weighted"] = accuracy(knn(f, y_fit, s, classes), y_score)
            if norm in linear_for and fit.shape[1] <= 4096:  # flattened tokens: kNN only
                pred, l2 = linear(f, y_fit, s, classes)
                row["linear"], row["linear_l2"] = accuracy(pred, y_score), l2
            rows.append(row)
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="run folder")
    parser.add_argument("--recipe", help="recipe for --random-init without a run")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed")
    parser.add_argument("--pixels", action="store_true", help="raw pixels only")
    parser.add_argument("--data", required=True)
    parser.add_argument("--test")
    parser.add_argument("--which", default="target,context")
    parser.add_argument("--pools", default="", help="comma list; default all")
    parser.add_argument("--linear", default="raw,l2", help="norms that also get a linear probe")
    parser.add_argument("--norms", default=",".join(NORMS), help="comma list")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    rows, spectra, sources = [], {}, {}
    linear_for = [n for n in args.linear.split(",") if n]

    def cut(x, y):
        if args.test:
            return x, y, None, None
        fit, val = split_indices(len(y))
        return x[fit], y[fit], x[val], y[val]

    if args.pixels:
        x, y = pixels(args.data)
        fx, fy, sx, sy = cut(x, y)
        if args.test:
            sx, sy = pixels(args.test)
        classes = int(y.max()) + 1
        evaluate(
            "pixels",
            {"raw_pixels": {"fit": fx, "score": sx}},
            fy,
            sy,
            classes,
            linear_for,
            rows,
            spectra,
        )
    else:
        if args.run and not args.random_init:
            trained = open_trained_method(Path(args.run), read_run_recipe(Path(args.run)))
            recipe, method, tag = trained.recipe, trained.method, f"step{trained.step}"
        else:
            recipe = read_run_recipe(Path(args.run)) if args.run else load_recipe(args.recipe)
            torch.manual_seed(args.seed)
            method = method_spec(recipe.method).require("build")(recipe)
            tag = f"random{args.seed}"
        spec = method_spec(recipe.method)
        train = spec.eval_data(recipe, args.data, None)
        test = spec.eval_data(recipe, args.test, None) if args.test else None
        for which in args.which.split(","):
            encoder = method.encoder(which)
            feats, y = encoder_features(encoder, train)
            test_feats, test_y = encoder_features(encoder, test) if test else (None, None)
            if args.pools:
                keep = args.pools.split(",")
                feats = {k: v for k, v in feats.items() if k in keep}
            pooled = {}
            for pool, x in feats.items():
                fx, fy, sx, sy = cut(x, y)
                if test:
                    sx, sy = test_feats[pool], test_y
                pooled[pool] = {"fit": fx, "score": sx}
            classes = len(train.classes)
            norms = args.norms.split(",")
            evaluate(f"{tag}-{which}", pooled, fy, sy, classes, linear_for, rows, spectra, norms)
        sources["recipe"] = recipe.name if hasattr(recipe, "name") else str(args.recipe)
    report = {
        "args": vars(args),
        "split": "test" if args.test else "validation (7/8 fit, 1/8 scored, seed 0)",
        "rows": rows,
        "spectra": spectra,
        "seconds": round(time.time() - t0, 1),
        **sources,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [
        "| encoder | pooling | norm | linear | kNN plain | kNN weighted |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lin = f"{100 * r['linear']:.1f}" if "linear" in r else "-"
        lines.append(
            f"| {r['encoder']} | {r['pooling']} | {r['norm']} | {lin} | "
            f"{100 * r['knn_plain']:.1f} | {100 * r['knn_weighted']:.1f} |"
        )
    lines += [
        "",
        "| features | dim | PCA top-1 | PCA top-10 | RankMe | |mean| / mean |x| |",
        "|---|---|---|---|---|---|",
    ]
    for key, s in spectra.items():
        lines.append(
            f"| {key} | {s['dim']} | {s['pca_top1_share']:.2f} | {s['pca_top10_share']:.2f} | "
            f"{s['rankme']:.1f} | {s['mean_norm_over_sample_norm']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
