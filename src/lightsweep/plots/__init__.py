"""Figures for one run. Each takes plain arrays (numpy, lists; a CPU tensor converts) and writes one
PNG: they draw in any process (lightsweep.plots.drawer: worker processes for a vectorized group's
members). matplotlib is imported only when a figure is drawn (start-up time); torch only by
`decision_grid`, which runs the model (in the process that has it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def confusion_matrix(matrix, class_names: list[str], path: Path) -> Path:
    """Counts with row-normalised colours: each row is one true class."""
    plt = pyplot()
    counts = np.asarray(matrix).astype(np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(int(counts.sum()), 1)
    ax.set_title(f"Test confusion matrix (accuracy {accuracy:.4f})")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return save_figure(fig, path)


def learning_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Loss and accuracy against epoch, train and validation."""
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax, label in [
        ("train/loss_epoch", ax_loss, "train"),
        ("val/loss", ax_loss, "val"),
        ("train/acc", ax_acc, "train"),
        ("val/acc", ax_acc, "val"),
    ]:
        points = history.get(key, [])
        if points:
            epochs, values = zip(*points)
            ax.plot([e + 1 for e in epochs], values, marker="o", markersize=3, label=label)
    for ax, name in [(ax_loss, "loss"), (ax_acc, "accuracy")]:
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")
    return save_figure(fig, path)


def weight_templates(weight, image_shape, class_names: list[str], path: Path) -> Path:
    """Each class's weight vector of a linear model drawn as an image (red +, blue -)."""
    plt = pyplot()
    weight = np.asarray(weight, dtype=np.float32)
    k = len(weight)
    cols = min(k, 5)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:k]):
        image = weight[i].reshape(*image_shape)
        bound = float(np.abs(image).max()) or 1.0
        ax.imshow(image, cmap="seismic", vmin=-bound, vmax=bound)
        ax.set_title(class_names[i] if i < len(class_names) else str(i), fontsize=9)
    fig.suptitle("Weight templates (red: evidence for the class, blue: against)")
    return save_figure(fig, path)


def decision_grid(predict_proba, x, size: int = 200):
    """(g0, g1, probability of class 1) over the plane around the points `x` (N, 2): `predict_proba`
    (a model's, torch) evaluated on a size x size grid, as numpy arrays for `decision_boundary`."""
    import torch

    x = torch.as_tensor(x).cpu()
    lo, hi = x.min(dim=0).values - 0.5, x.max(dim=0).values + 0.5
    g0, g1 = torch.meshgrid(torch.linspace(lo[0], hi[0], size), torch.linspace(lo[1], hi[1], size), indexing="xy")
    grid = torch.stack([g0.flatten(), g1.flatten()], dim=1)
    with torch.no_grad():
        proba = predict_proba(grid).reshape(g0.shape)
    return g0.numpy(), g1.numpy(), proba.cpu().numpy()


def decision_boundary(grid, x, y, class_names, path: Path) -> Path:
    """Predicted probability of class 1 over the plane (`decision_grid`), with the test points on top."""
    plt = pyplot()
    g0, g1, proba = grid
    x, y = np.asarray(x), np.asarray(y)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    contour = ax.contourf(g0, g1, proba, levels=20, cmap="RdBu_r", alpha=0.8, vmin=0, vmax=1)
    ax.contour(g0, g1, proba, levels=[0.5], colors="k", linewidths=1.5)
    for label, marker in [(0, "o"), (1, "s")]:
        pts = x[y == label]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=10,
            marker=marker,
            edgecolor="k",
            linewidth=0.3,
            label=class_names[label] if label < len(class_names) else str(label),
        )
    fig.colorbar(contour, ax=ax, label=f"P({class_names[1] if len(class_names) > 1 else 1})")
    ax.set_title("Decision boundary (test points)")
    ax.legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)


def most_confident_mistakes(labels, probabilities, limit: int = 25):
    """Indices of the wrong predictions, the most confident first, and (predicted, confidence) of all.
    `probabilities` (N, K), or (N,) for a binary model (the positive class's)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    if probabilities.ndim == 1:
        probabilities = np.stack([1 - probabilities, probabilities], axis=1)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:limit], predicted, confidence


def misclassified(images, labels, probabilities, class_names: list[str], path: Path, limit: int = 25) -> Path | None:
    """The most confident mistakes first: each image (N, H, W, as stored) with its true and predicted
    label and the predicted class's probability. None when there is no mistake to show.

    One mosaic in one axes (25 small axes take several times longer to draw)."""
    labels = np.asarray(labels)
    shown, predicted, confidence = most_confident_mistakes(labels, probabilities, limit)
    if len(shown) == 0:
        return None
    plt = pyplot()
    cols = min(len(shown), 5)
    rows = math.ceil(len(shown) / cols)
    h, w = np.asarray(images[shown[0]]).shape
    gap, pad = round(h * 0.8), max(2, w // 2)  # room for two lines of text above each image, and between
    canvas = np.full((rows * (h + gap), cols * (w + pad) - pad), np.nan)
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        image = np.asarray(images[i], dtype=np.float64)
        low, high = image.min(), image.max()
        y0, x0 = r * (h + gap) + gap, c * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = (image - low) / (high - low) if high > low else 0.0
    fig, ax = plt.subplots(figsize=(2.1 * cols, 2.5 * rows))
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("white")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        ax.text(
            c * (w + pad) + w / 2,
            r * (h + gap) + gap - 1,
            f"true: {class_names[labels[i]]}\npred: {class_names[predicted[i]]} ({confidence[i]:.2f})",
            ha="center",
            va="bottom",
            fontsize=8,
            color="firebrick",
        )
    ax.axis("off")
    n_wrong = int((predicted != labels).sum())
    ax.set_title(f"Misclassified test images, most confident first ({n_wrong} of {len(labels)} wrong)", fontsize=10)
    return save_figure(fig, path)
