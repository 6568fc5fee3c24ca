import torch.nn.functional as F

from lightsweep.models.base import Classifier
from lightsweep.models.networks import LinearNet


class SoftmaxRegression(Classifier):
    """Multinomial logistic regression: K logits.

    loss=ce: cross-entropy via log-softmax (log-sum-exp, stable for huge logits) on integer labels
    or one-hot targets; loss=mse: squared error between one-hot targets and softmax probabilities
    (the classic comparison: MSE's gradients vanish when the softmax saturates).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        loss: str = "ce",
        label_smoothing: float = 0.0,
        optimizer=None,
        scheduler=None,
        scheduler_config=None,
        param_groups=None,
    ):
        super().__init__(
            LinearNet(input_dim, num_classes), num_classes, optimizer, scheduler, scheduler_config, param_groups
        )
        self.save_hyperparameters(ignore=list(self.WIRING), logger=False)
        self.loss_name, self.label_smoothing = loss, label_smoothing

    def loss(self, logits, target):
        if self.loss_name == "mse":
            one_hot = target if target.ndim == 2 else F.one_hot(target, self.num_classes)
            return F.mse_loss(logits.softmax(dim=1), one_hot.to(logits.dtype))
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
