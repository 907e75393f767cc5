"""Online probes: linear and kNN accuracy of the frozen encoder, measured during pretraining.

Every ``eval.every`` optimizer steps the trainer asks :class:`OnlineProbe` to score the encoder
on a small labelled set that stays fixed for the whole run (and across ``--resume``):

* **Which samples:** the method's own labelled data (``eval_data``) at the pretraining path.
  With a test split, ``eval.fit_samples`` seeded samples of its training split fit the probes
  and ``eval.score_samples`` of the test split score them; without one, two disjoint seeded
  subsets of the labelled data do. The choice is written to ``RUN/online_probe.json``.
  Pretraining is self-supervised, so the encoder has seen the fitting images without labels,
  as in solo-learn's and stable-pretraining's online probes; the scored samples are held out
  from the probe's fitting, and from pretraining too when the data has a test split.
* **What is measured:** the frozen, pooled features (``encoder.pooled``) -> the same logistic
  regression (L2 picked on a tenth of the fitting samples) and cosine kNN as ``jepactl probe``
  (evaluate/probe.py), plus RankMe (Garrido et al. 2023: exp of the entropy of the normalised
  singular values of the features), without labels.
* **Baselines, once per run:** before the first step the same probes score the raw inputs
  (each sample flattened, as the encoder receives it) and the encoder as initialised (this
  seed's random init, step 0). They go into ``RUN/online_probe.json`` under ``baselines`` and
  ``jepactl report`` draws them as the curve's step 0 and a dashed "raw input" line, so every
  run carries its own answer to "did pretraining pay?". A resumed run keeps the first ones.
* **Reproducibility:** the probe runs under a forked RNG with no loader workers, so a resumed
  run draws exactly what the uninterrupted one draws; results go into that step's record in
  ``metrics.jsonl`` as ``online_linear_accuracy``, ``online_knn_accuracy``, ``online_rankme``
  and ``online_probe_s`` (its cost in seconds).

A method whose data has no labels, or whose probe has no cheap classification form (policies,
concept facts, the linear analysis), has no online probe; the trainer says so once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from jepactl.errors import UserError
from jepactl.evaluate.features import extract_features
from jepactl.evaluate.metrics import accuracy
from jepactl.evaluate.probe import knn_predict, linear_probe
from jepactl.registry import method_spec


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe: exp(entropy) of the singular values of ``features`` (N, D) normalised to sum 1."""
    values = torch.linalg.svdvals(features.double())
    p = values / values.sum().clamp_min(eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


# Larger inputs (a 224 px image: 150,528 values) get no raw-input baseline: a logistic
# regression on them would cost more than the run's online probes together.
RAW_INPUT_MAX_DIMS = 16_384
AUTO_MIN_STEPS = 100  # shorter runs (smoke tests) get no online probe unless they ask


def resolve_every(every, log_every: int, max_steps: int) -> int:
    """``eval.every`` as steps: ``auto`` is a fifth of the run rounded up to a logged step (off
    below :data:`AUTO_MIN_STEPS` steps, where the probes would cost more than they tell)."""
    if every == "auto":
        if max_steps < AUTO_MIN_STEPS:
            return 0
        fifth = max(1, max_steps // 5)
        return -(-fifth // log_every) * log_every
    every = int(every)
    if every < 0 or (every and every % log_every):
        raise UserError(
            f"recipe key 'eval.every' must be 0 (off), auto or a multiple of train.log_every "
            f"({log_every}), got {every}"
        )
    return every


def _labelled(dataset) -> bool:
    labels = getattr(dataset, "labels", None)
    if labels is None or not len(getattr(dataset, "classes", [])):
        return False
    labels = torch.as_tensor(labels)
    return labels.ndim == 1 and bool((labels >= 0).all()) and len(labels) > 1


def _in_memory(dataset) -> TensorDataset:
    items = [dataset[i] for i in range(len(dataset))]
    inputs = torch.stack([x for x, _ in items])
    return TensorDataset(inputs, torch.as_tensor([int(y) for _, y in items]))


def _pick(count: int, wanted: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(count)[: min(wanted, count)])


class OnlineProbe:
    """The fixed labelled sets of one run and the probe that scores an encoder on them."""

    def __init__(self, fit_set, score_set, classes: int, described: dict, config) -> None:
        self.fit_set, self.score_set, self.classes = fit_set, score_set, classes
        self.described, self.config = described, config

    @classmethod
    def for_run(cls, recipe, data: str | None, config) -> tuple["OnlineProbe | None", str]:
        """Return (the probe, "") or (None, why there is none)."""
        spec = method_spec(recipe.method)
        if spec.eval_data is None or spec.has_split is None:
            return None, "the method has no labelled data set"
        if spec.no_online_probe:
            return None, spec.no_online_probe
        rng = np.random.default_rng(config.seed)
        try:
            if spec.has_split(recipe, data, "test"):
                fit_all = spec.eval_data(recipe, data, "train")
                score_all = spec.eval_data(recipe, data, "test")
                split = "the data's train / test splits"
                fit_idx = _pick(len(fit_all), config.fit_samples, rng)
                score_idx = _pick(len(score_all), config.score_samples, rng)
            else:
                fit_all = score_all = spec.eval_data(recipe, data, None)
                split = "two disjoint seeded subsets"
                order = rng.permutation(len(fit_all))
                score_count = min(config.score_samples, len(order) // 5)
                score_idx = np.sort(order[:score_count])
                fit_idx = np.sort(order[score_count : score_count + config.fit_samples])
        except UserError as err:
            return None, f"no labelled data ({err})"
        if not (_labelled(fit_all) and _labelled(score_all)):
            return None, "the data has no class labels"
        if getattr(fit_all, "task", "classification") != "classification":
            return None, "the labels are not classes"
        if len(fit_idx) < 2 or len(score_idx) < 1:
            return None, "too few labelled samples"
        described = {
            "data": data,
            "split": split,
            "fit_samples": int(len(fit_idx)),
            "score_samples": int(len(score_idx)),
            "seed": config.seed,
            "every": None,
        }
        classes = len(fit_all.classes)
        return cls(
            Subset(fit_all, fit_idx), Subset(score_all, score_idx), classes, described, config
        ), ""

    def materialise(self, budget_bytes: int = 512 * 2**20) -> None:
        """Read both sets into memory once when they fit ``budget_bytes``: every probe then
        costs the forward passes only (decoding 3,000 MNIST files took 5 of a probe's 9 s)."""
        first = self.fit_set[0][0]
        if not torch.is_tensor(first):
            return
        size = first.numel() * first.element_size() * (len(self.fit_set) + len(self.score_set))
        if size > budget_bytes:
            return
        self.fit_set, self.score_set = _in_memory(self.fit_set), _in_memory(self.score_set)

    def write(self, run_dir: Path, every: int) -> None:
        """Write ``RUN/online_probe.json``; baselines an earlier start measured are kept."""
        self.described["every"] = every
        path = run_dir / "online_probe.json"
        if "baselines" not in self.described and path.is_file():
            try:
                earlier = json.loads(path.read_text()).get("baselines")
            except (OSError, ValueError, AttributeError):
                earlier = None
            if isinstance(earlier, dict):
                self.described["baselines"] = earlier
        path.write_text(json.dumps(self.described, indent=2) + "\n")

    def measure_baselines(self, encoder: torch.nn.Module, precision: str) -> dict:
        """Score the raw inputs and ``encoder`` as it is now (before any step: this seed's
        random init); keep both in :attr:`described` (written by :meth:`write`)."""
        baselines = {"step_0": _named(self.score(encoder, precision))}
        raw, why = self._raw_inputs()
        if raw is None:
            baselines["raw_input"] = {"skipped": why}
        else:
            with torch.random.fork_rng(devices=[]):
                baselines["raw_input"] = _named(self._probe(*raw), dims=int(raw[0].shape[1]))
        self.described["baselines"] = baselines
        return baselines

    def _raw_inputs(self):
        """((fit_x, fit_y, score_x, score_y) of the flattened inputs, "") or (None, why): the
        inputs must be one fixed-shape float tensor per sample (not token ids, dicts or ragged
        clouds) of at most :data:`RAW_INPUT_MAX_DIMS` values."""
        first = self.fit_set[0][0]
        if not (torch.is_tensor(first) and first.is_floating_point()):
            return None, "the inputs are not float tensors"
        if first.numel() > RAW_INPUT_MAX_DIMS:
            return None, f"{first.numel()} values per sample (more than {RAW_INPUT_MAX_DIMS})"
        sets = []
        for subset in (self.fit_set, self.score_set):
            items = [subset[i] for i in range(len(subset))]
            xs = [x for x, _ in items]
            if not all(torch.is_tensor(x) and x.shape == first.shape for x in xs):
                return None, "the inputs differ in shape"
            inputs = torch.stack(xs).flatten(1).float()
            sets.append((inputs, torch.as_tensor([int(y) for _, y in items])))
        (fit_x, fit_y), (score_x, score_y) = sets
        return (fit_x, fit_y, score_x, score_y), ""

    def _probe(self, fit_x, fit_y, score_x, score_y) -> dict[str, float]:
        with torch.enable_grad():  # the logistic regression trains
            linear, _ = linear_probe(fit_x, fit_y, score_x, score_y, self.classes, seed=0)
        knn = knn_predict(fit_x, fit_y, score_x, self.classes, k=min(20, len(fit_y)))
        return {
            "online_linear_accuracy": accuracy(linear, score_y),
            "online_knn_accuracy": accuracy(knn, score_y),
            "online_rankme": rankme(torch.cat([fit_x, score_x])),
        }

    @torch.no_grad()
    def score(self, encoder: torch.nn.Module, precision: str) -> dict[str, float]:
        """Return this step's online metrics; the caller's RNG and the encoder's mode untouched."""
        start = time.perf_counter()
        was_training = encoder.training
        with torch.random.fork_rng(devices=[]):
            (fit_x, fit_y), (score_x, score_y) = (
                extract_features(
                    encoder,
                    subset,
                    self.config.batch_size,
                    num_workers=0,
                    precision=precision,
                    description=None,
                )
                for subset in (self.fit_set, self.score_set)
            )
            scores = self._probe(fit_x, fit_y, score_x, score_y)
        encoder.train(was_training)
        return {**scores, "online_probe_s": time.perf_counter() - start}


def _named(scores: dict[str, float], **extra) -> dict:
    """Online-probe scores under the plain names a baseline keeps (``linear_accuracy``, ...)."""
    named = {
        key.removeprefix("online_"): value
        for key, value in scores.items()
        if key != "online_probe_s"
    }
    return {**named, **extra}
