"""Networks (plain nn.Modules) and the LightningModules that train them."""

from lightsweep.models.base import Classifier
from lightsweep.models.logistic import LogisticRegression
from lightsweep.models.mlp import MLPClassifier
from lightsweep.models.networks import MLP, LinearNet
from lightsweep.models.softmax import SoftmaxRegression

__all__ = ["MLP", "Classifier", "LinearNet", "LogisticRegression", "MLPClassifier", "SoftmaxRegression"]
