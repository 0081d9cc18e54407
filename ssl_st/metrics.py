"""Classification metrics, as the reusability study reports them (sklearn, classes present in
y_true or y_pred, no hierarchy correction)."""

from __future__ import annotations

import numpy as np

CLASSIFICATION_METRICS = ("macro_f1", "weighted_f1", "accuracy")


def classification(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score  # deferred: keeps `ssl-st status` instant

    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
