"""The SVM probe as a task: what a frozen (pretrained) encoder's pooled features are worth to a linear SVM.

``train.probe: linear`` trains a linear layer on the frozen encoder's pooled features with the one
Trainer (:class:`~pointmap.models.linear_probe.LinearProbe` is the model the classification task
builds). ``train.probe: svm`` selects :class:`SvmProbeTask`, which fits a linear SVM (scikit-learn's
``LinearSVC`` on standardized features, as Point-BERT / ReCon report) instead of training. Both label
their results with the protocol: the SVM's ``C`` is chosen on the validation split (clean) or on test (peer).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..errors import MissingPackageError, UserError
from ..models.classifier import pooled_features
from . import distributed as du
from .datasets import SplitView, to_device
from .metrics import classification_metrics, confusion_matrix, protocol_note
from .tasks import ClassificationTask, model_inputs, register_task

__all__ = ["SvmProbeTask", "extract_features", "SVM_C_GRID"]

logger = logging.getLogger(__name__)

SVM_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(features (n, F) float64, labels (n,) int64) of every item, in order."""
    model.eval()
    feats, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        feats.append(pooled_features(model, model_inputs(batch)).double().cpu())
        labels.append(batch["label"].reshape(-1).cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _fit_svm(c: float, x: np.ndarray, y: np.ndarray, seed: int):
    try:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC
    except ImportError as e:
        raise MissingPackageError("train.probe=svm needs scikit-learn: pip install scikit-learn") from e
    return make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000, random_state=seed)).fit(x, y)


def _score(clf, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dict[str, Any]:
    pred = torch.as_tensor(clf.predict(x))
    out: Dict[str, Any] = classification_metrics(confusion_matrix(pred, torch.as_tensor(y), num_classes))
    out["count"] = int(len(y))
    return out


@register_task("svm_probe")
class SvmProbeTask(ClassificationTask):
    """``train.probe: svm``: the classification task's data and frozen encoder; instead of a training loop,
    pooled features of un-augmented clouds -> a linear SVM per ``C`` in :data:`SVM_C_GRID`, the best on
    the selection split (val under the clean protocol, test under the peer one) -> test scored once."""

    trains = False

    def solve(self, trainer) -> Dict[str, Any]:
        cfg, datasets = self.cfg, trainer.datasets
        if du.is_distributed():
            raise UserError("train.probe=svm runs in one process; start it without torchrun")
        if not cfg.pretrained:
            logger.warning("svm probe without --ckpt: features of a randomly initialised encoder")
        plain = datasets["test"].transform  # features of un-augmented clouds for every split
        bs = cfg.data.eval_batch_size or cfg.data.batch_size
        feats = {}
        for split, ds in datasets.items():
            view = SplitView(ds.base, ds.indices, plain) if isinstance(ds, SplitView) else ds
            feats[split] = extract_features(trainer.module, view, bs, trainer.device)
        select = "val" if datasets["val"] is not datasets["test"] else "test"
        num_classes = self.num_classes or datasets["train"].num_classes
        scores = {c: _score(_fit_svm(c, *feats["train"], cfg.train.seed), *feats["val"], num_classes)["acc"]
                  for c in SVM_C_GRID}
        best_c = max(SVM_C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularization
        test = _score(_fit_svm(best_c, *feats["train"], cfg.train.seed), *feats["test"], num_classes)
        results = {**trainer.summary(), "probe": "svm", "selection": {"split": select, "metric": "acc", "mode": "max"},
                   "best": {"epoch": None, "C": best_c, "value": scores[best_c]},
                   "svm_grid": {str(c): s for c, s in scores.items()}, "test": test,
                   "protocol_note": protocol_note(cfg.eval.protocol, "SVM C", "acc")}
        logger.info("svm probe | C %g (%s acc %.2f) | test acc %.2f macc %.2f | protocol %s: %s", best_c, select,
                    scores[best_c], test["acc"], test["macc"], cfg.eval.protocol, results["protocol_note"])
        return results
