"""The classic floor: a linear model (scikit-learn) on time-averaged features, fitted in closed form.

Speech emotion recognition measures itself against openSMILE functionals (eGeMAPSv02's 88,
ComParE_2016's 6,373 per utterance) with a linear classifier; this model is that baseline inside the
toolkit. Each modality it reads is averaged over its real frames (a functionals vector is one frame,
so it passes unchanged), the modalities are concatenated and standardised with the training split's
statistics, and scikit-learn fits the classifier (logistic regression or a linear SVM) or ridge
regression once per value of the regularisation grid; the trainer keeps the value that scores best
on validation, as it keeps an epoch of the other models (training/trainer.py, `fit`).

The fitted weights live in the module (frozen parameters and buffers), so the forward pass is plain
torch: checkpoints, `predict`, `export`, serving and robustness evaluation work as for any model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sentangle.core.errors import ConfigError
from sentangle.core.registry import MODELS
from sentangle.data.batch import Batch
from sentangle.models.base import ModelOutput, MSAModel
from sentangle.models.layers import masked_mean

# inverse regularisation strengths (C; ridge: alpha = 1 / (2 C)), the usual decade grid
DEFAULT_GRID = [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1, 1.0, 10.0]
CLASSIFIERS = ("logreg", "svm")


@MODELS.register("linear")
class Linear(MSAModel):
    # trained by `fit_candidate` once per grid value, not by gradient steps (training/trainer.py)
    closed_form = True

    def __init__(
        self,
        input_dims,
        output_dim=1,
        text_encoder=None,
        classifier: str = "logreg",
        grid: list[float] | None = None,
        max_iter: int = 5000,
        modalities: list[str] | None = None,
    ):
        super().__init__(input_dims, output_dim, text_encoder)
        if self.text_encoder is not None:
            raise ConfigError(
                "linear: model.text_encoder.finetune must be 0 (a closed-form fit cannot fine-tune an encoder)"
            )
        if classifier not in CLASSIFIERS:
            raise ConfigError(f"linear: model.classifier is {classifier!r}; expected one of {', '.join(CLASSIFIERS)}")
        grid = list(DEFAULT_GRID if grid is None else grid)
        if not grid or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 for c in grid):
            raise ConfigError(f"linear: model.grid must be a non-empty list of positive numbers, got {grid!r}")
        self.use = tuple(modalities or self.modalities)
        unknown = [m for m in self.use if m not in self.input_dims]
        if unknown:
            raise ConfigError(f"linear: model.modalities {unknown} are not in the data ({list(self.input_dims)})")
        self.classifier, self.grid, self.max_iter = classifier, [float(c) for c in grid], int(max_iter)
        d = sum(self.input_dims[m] for m in self.use)
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.weight = nn.Parameter(torch.zeros(output_dim, d), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(output_dim), requires_grad=False)

    def pooled(self, batch: Batch) -> torch.Tensor:
        feats, masks = self.inputs(batch)
        return torch.cat([masked_mean(feats[m], masks[m]) for m in self.use], dim=-1)

    def forward(self, batch: Batch) -> ModelOutput:
        x = (self.pooled(batch) - self.mean) / self.scale
        return ModelOutput(self.head_output(x @ self.weight.T + self.bias))

    def fit_candidate(self, x: np.ndarray, y: np.ndarray, value: float, seed: int) -> dict:
        """Fit at grid value `value` (C) on the training split's pooled features `x` and labels `y`;
        the weights go into the module. Returns what the history records."""
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.svm import LinearSVC

        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-8] = 1.0  # a constant column: left at 0 after centring
        z = (x - mean) / scale
        if self.output_dim == 1:
            est = Ridge(alpha=1.0 / (2.0 * value)).fit(z, y)
            coef, intercept = est.coef_.reshape(1, -1), np.atleast_1d(est.intercept_)
        else:
            if self.classifier == "logreg":
                est = LogisticRegression(C=value, max_iter=self.max_iter, random_state=seed).fit(z, y)
            else:
                est = LinearSVC(C=value, max_iter=self.max_iter, random_state=seed).fit(z, y)
            coef, intercept = self._all_classes(est.coef_, est.intercept_, est.classes_)
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean))
            self.scale.copy_(torch.as_tensor(scale))
            self.weight.copy_(torch.as_tensor(coef))
            self.bias.copy_(torch.as_tensor(intercept))
        return {"C": value}

    def _all_classes(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> tuple:
        """One row per class of the task: a binary fit has one decision row (the positive class
        against the other), and a class absent from the training labels never wins."""
        w = np.zeros((self.output_dim, coef.shape[1]))
        b = np.full(self.output_dim, -1e4)
        if len(classes) == 2 and coef.shape[0] == 1:
            w[classes[1]], b[classes[1]] = coef[0], intercept[0]
            b[classes[0]] = 0.0
        else:
            w[classes], b[classes] = coef, intercept
        return w, b
