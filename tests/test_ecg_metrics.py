"""ECG metrics against hand-computed values."""

from __future__ import annotations

import torch

from jepactl.domains.ecg.metrics import average_by_group, beat_metrics, macro_auc, roc_auc


def test_beat_metrics_give_per_class_sensitivity_ppv_macro_f1_and_balanced_accuracy():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    m = beat_metrics(pred, labels, ["N", "S", "V", "F"])
    assert m["sens_N"] == 0.75 and abs(m["ppv_N"] - 0.75) < 1e-6
    assert m["sens_S"] == 0.5 and m["ppv_S"] == 0.5
    assert m["sens_V"] == 1.0 and m["ppv_V"] == 1.0
    assert "sens_F" not in m  # absent class: not in the macro averages
    assert abs(m["balanced_accuracy"] - (0.75 + 0.5 + 1.0) / 3) < 1e-6
    assert abs(m["macro_f1"] - (0.75 + 0.5 + 1.0) / 3) < 1e-6
    assert abs(m["accuracy"] - 5 / 7) < 1e-6


def test_weights_count_a_subsampled_window_for_the_windows_it_stands_for():
    labels, pred = torch.tensor([0, 1]), torch.tensor([1, 1])
    m = beat_metrics(pred, labels, ["N", "S"], weights=torch.tensor([9.0, 1.0]))
    assert abs(m["ppv_S"] - 0.1) < 1e-6 and m["sens_S"] == 1.0 and m["sens_N"] == 0.0


def test_auc_is_the_probability_a_positive_outranks_a_negative_with_ties_half():
    import numpy as np

    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    auc, counted = macro_auc(scores, targets)
    assert counted == 2 and auc == 1.0


def test_sliding_crop_logits_average_per_record():
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    out = average_by_group(logits, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(out, torch.tensor([[2.0, 1.0], [5.0, 5.0]]))
