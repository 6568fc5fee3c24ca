import torch.nn.functional as F

from lightsweep.models.base import Classifier
from lightsweep.models.networks import MLP


class MLPClassifier(Classifier):
    """Multi-layer perceptron with cross-entropy."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_sizes=(256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer=None,
        scheduler=None,
        scheduler_config=None,
        param_groups=None,
    ):
        net = MLP(input_dim, list(hidden_sizes), num_classes, activation, dropout)
        super().__init__(net, num_classes, optimizer, scheduler, scheduler_config, param_groups)
        self.save_hyperparameters(ignore=list(self.WIRING), logger=False)
        self.label_smoothing = label_smoothing

    def loss(self, logits, target):
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
