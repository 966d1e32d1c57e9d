"""Linear probing: what a frozen (pretrained) encoder's pooled features are worth.

``train.probe: linear`` trains a linear layer on the frozen encoder's pooled features with the one
Trainer (:class:`LinearProbe` is the model the classification task builds). ``train.probe: svm`` fits a
linear SVM (scikit-learn's ``LinearSVC`` on standardized features, as Point-BERT / ReCon report) instead
of training: :func:`run_svm_probe`, which :func:`~pointmap.engine.run` calls for it. Both label their
results with the protocol: the SVM's ``C`` is chosen on the validation split (clean) or on test (peer).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..config import Config, save_config
from ..models import pool_tokens
from . import distributed as du
from .datasets import SplitView, to_device
from .logging import RunWriter, setup_logging
from .metrics import classification_metrics, confusion_matrix
from .tasks import Task, build_task, model_inputs

__all__ = ["LinearProbe", "run_svm_probe", "SVM_C_GRID"]

logger = logging.getLogger(__name__)

SVM_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


class LinearProbe(nn.Module):
    """A frozen encoder, its tokens pooled (no new token: [max; mean] by default), then a linear layer.

    The features pass a BatchNorm without affine parameters first (as MAE's linear probe), which at
    evaluation is a fixed per-channel affine map, so the classifier stays linear. The encoder stays in
    eval mode whatever ``train()`` says, so its norm statistics and drop paths are frozen too.
    Keys are ``encoder.*`` and ``head.*``: pretrained checkpoints load into it as into a classifier.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, global_pool: str = "max_mean"):
        super().__init__()
        self.encoder, self.global_pool = encoder, global_pool
        self.encoder.requires_grad_(False)
        self.num_features = (2 if global_pool == "max_mean" else 1) * encoder.embed_dim
        self.num_classes = num_classes
        self.head = nn.Sequential(nn.BatchNorm1d(self.num_features, affine=False, eps=1e-6),
                                  nn.Linear(self.num_features, num_classes))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.encoder.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """inputs -> (B, num_features), without gradients into the encoder."""
        with torch.no_grad():
            out = self.encoder(x)
            return pool_tokens(out.tokens, None, self.global_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(features (n, F) float64, labels (n,) int64) of every item, in order."""
    model.eval()
    feats, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        feats.append(model.forward_features(model_inputs(batch)).double().cpu())
        labels.append(batch["label"].reshape(-1).cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _fit_svm(c: float, x: np.ndarray, y: np.ndarray, seed: int):
    try:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC
    except ImportError:
        raise ImportError("train.probe=svm needs scikit-learn: pip install scikit-learn") from None
    return make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000, random_state=seed)).fit(x, y)


def _score(clf, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dict[str, Any]:
    pred = torch.as_tensor(clf.predict(x))
    out: Dict[str, Any] = classification_metrics(confusion_matrix(pred, torch.as_tensor(y), num_classes))
    out["count"] = int(len(y))
    return out


def run_svm_probe(cfg: Config, task: Optional[Task] = None, *, device: str = "auto",
                  work_dir: Optional[str] = None, **_ignored) -> Dict[str, Any]:
    """Pretrained encoder (``cfg.pretrained``) -> pooled features without augmentation -> a linear SVM
    per ``C`` in :data:`SVM_C_GRID`, the best on the selection split -> scored once on test."""
    if du.is_distributed():
        raise ValueError("train.probe=svm runs in one process; start it without torchrun")
    if cfg.task != "classification":
        raise ValueError(f"train.probe=svm needs task: classification, not {cfg.task!r}")
    work_dir = work_dir or os.path.join(cfg.train.output_dir, cfg.name or "run", cfg.exp_name)
    if not cfg.train.overwrite and os.path.isfile(os.path.join(work_dir, "metrics.json")):
        raise ValueError(f"{work_dir} already holds a run: --exp-name NAME for a new one, or train.overwrite=true")
    setup_logging(os.path.join(work_dir, "log.txt"), True)
    save_config(cfg, os.path.join(work_dir, "config.yaml"))
    dev = du.resolve_device(device)
    task = task if task is not None else build_task(cfg)
    torch.manual_seed(cfg.train.seed)
    datasets = task.build_datasets()
    model = task.build_model(datasets)
    if cfg.pretrained:
        task.load_pretrained(model, cfg.pretrained)
    else:
        logger.warning("svm probe without --ckpt: features of a randomly initialised encoder")
    model.to(dev)
    plain = datasets["test"].transform  # features of un-augmented clouds for every split
    bs = cfg.data.eval_batch_size or cfg.data.batch_size
    feats = {}
    for split, ds in datasets.items():
        if split not in feats:
            view = SplitView(ds.base, ds.indices, plain) if isinstance(ds, SplitView) else ds
            feats[split] = extract_features(model, view, bs, dev)
    select = "val" if datasets["val"] is not datasets["test"] else "test"
    num_classes = task.num_classes or datasets["train"].num_classes
    scores = {c: _score(_fit_svm(c, *feats["train"], cfg.train.seed), *feats["val"], num_classes)["acc"]
              for c in SVM_C_GRID}
    best_c = max(SVM_C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularization
    test = _score(_fit_svm(best_c, *feats["train"], cfg.train.seed), *feats["test"], num_classes)
    how = {"clean": "SVM C chosen on acc of a validation split held out of train",
           "peer": "SVM C chosen on test acc (the peers' habit)"}
    results = {"protocol": cfg.eval.protocol, "task": task.name, "probe": "svm", "config": cfg.name,
               "exp_name": cfg.exp_name, "work_dir": os.path.abspath(work_dir),
               "selection": {"split": select, "metric": "acc", "mode": "max"},
               "best": {"epoch": None, "C": best_c, "value": scores[best_c]},
               "svm_grid": {str(c): s for c, s in scores.items()}, "test": test,
               "protocol_note": how[cfg.eval.protocol]}
    RunWriter(work_dir).write_json(results)
    logger.info("svm probe | C %g (%s acc %.2f) | test acc %.2f macc %.2f | protocol %s: %s", best_c, select,
                scores[best_c], test["acc"], test["macc"], cfg.eval.protocol, results["protocol_note"])
    return results
