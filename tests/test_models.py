"""Networks, losses and optimizer wiring of the LightningModules."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightsweep.models import MLP, LinearNet, LogisticRegression, MLPClassifier, SoftmaxRegression


@pytest.mark.parametrize("scale", [1.0, 1e4, -1e4])
def test_losses_are_finite_for_huge_logits(scale):
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * scale
    target = torch.randint(0, 10, (64,))
    for loss in ("ce", "mse"):
        module = SoftmaxRegression(784, 10, loss=loss)
        value = module.loss(logits, target)
        assert torch.isfinite(value), (loss, scale)
    logistic = LogisticRegression(784)
    value = logistic.loss(logits[:, 0], (target % 2))
    assert torch.isfinite(value)
    # And the stable form is also correct: a confidently right huge logit costs ~0, a wrong one ~|logit|.
    right = torch.tensor([[1e4, 0.0]])
    assert SoftmaxRegression(2, 2).loss(right, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    assert SoftmaxRegression(2, 2).loss(right, torch.tensor([1])).item() == pytest.approx(1e4, rel=1e-6)


def test_gradients_stay_finite_for_huge_logits():
    logits = (torch.randn(8, 10) * 1e4).requires_grad_()
    SoftmaxRegression(784, 10).loss(logits, torch.randint(0, 10, (8,))).backward()
    assert torch.isfinite(logits.grad).all()


def test_one_hot_and_sparse_labels_give_the_same_loss_and_accuracy_labels():
    module = SoftmaxRegression(20, 5, label_smoothing=0.1)
    logits = torch.randn(16, 5)
    sparse = torch.randint(0, 5, (16,))
    one_hot = F.one_hot(sparse, 5).float()
    assert torch.allclose(module.loss(logits, sparse), module.loss(logits, one_hot))
    assert torch.equal(module.class_index(one_hot), sparse)
    mse = SoftmaxRegression(20, 5, loss="mse")
    assert torch.allclose(mse.loss(logits, sparse), mse.loss(logits, one_hot))


def test_networks_are_plain_modules():
    softmax = SoftmaxRegression(784, 10)
    assert type(softmax.net) is LinearNet and isinstance(softmax.net, nn.Module)
    mlp = MLPClassifier(784, 10, hidden_sizes=[32, 16], activation="tanh", dropout=0.2)
    assert isinstance(mlp.net, MLP)
    kinds = [type(m) for m in mlp.net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Dropout, nn.Linear, nn.Tanh, nn.Dropout, nn.Linear]
    assert mlp(torch.randn(3, 784)).shape == (3, 10)
    assert LogisticRegression(784)(torch.randn(3, 784)).shape == (3,)


def test_optimizer_and_scheduler_partials_are_wired():
    module = MLPClassifier(
        10,
        3,
        hidden_sizes=[4],
        optimizer=partial(torch.optim.SGD, lr=0.5, weight_decay=1e-3),
        scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=2),
    )
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    assert optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in module.parameters()}
    assert config["lr_scheduler"]["scheduler"].step_size == 2


def test_weight_decay_from_the_config_shrinks_the_trained_weights(make_cfg):
    """optimizer.weight_decay travels from conf/ through lightsweep's build and configure_optimizers
    into a real fit: the same run with decay ends with smaller weights."""
    from lightsweep.build import build

    norms = {}
    for decay in (0.0, 0.05):
        cfg = make_cfg("logger=none", "optimizer=sgd", f"optimizer.weight_decay={decay}")
        datamodule, model, trainer = build(cfg)
        trainer.fit(model, datamodule=datamodule)
        norms[decay] = model.net.linear.weight.norm().item()
        assert trainer.optimizers[0].param_groups[0]["weight_decay"] == decay
    assert norms[0.05] < 0.99 * norms[0.0]
