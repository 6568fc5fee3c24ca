import torch
import torch.nn.functional as F

from lightsweep.models.base import Classifier
from lightsweep.models.networks import LinearNet


class LogisticRegression(Classifier):
    """Binary logistic regression: one logit, BCEWithLogits (stable for any logit size)."""

    binary = True

    def __init__(
        self,
        input_dim: int,
        binary: bool = True,
        optimizer=None,
        scheduler=None,
        scheduler_config=None,
        param_groups=None,
    ):
        super().__init__(LinearNet(input_dim, 1), 2, optimizer, scheduler, scheduler_config, param_groups)
        self.save_hyperparameters(ignore=list(self.WIRING), logger=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, self.class_index(target).to(logits.dtype))

    def predict_labels(self, logits):
        return (logits > 0).long()
