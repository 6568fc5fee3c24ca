"""The hand-written baseline: what `python train.py model=softmax|mlp` computes, in plain PyTorch.

Same files (the uncompressed IDX files lightsweep reads from data/FashionMNIST/raw/), same 55k/5k
stratified split (split_seed 0), same normalisation (training-split mean/std), same initial weights
(torch.manual_seed(seed) before building the network), same per-(seed, epoch) shuffling, batch size
128, Adam(lr=1e-3), the MLP's cosine schedule, and per epoch the same metrics: training loss and
accuracy, validation loss and accuracy on the 5k split (batches of 1024). The best epoch (by
validation accuracy) is kept and tested on the official 10k at the end.

What it does not do, and lightsweep does: experiment tracking, checkpoint files per epoch, early
stopping checks, a progress bar, plots.

Run alone (the benchmark's whole-process comparison):
    python benchmarks/plain_train.py --model softmax --epochs 20
Imported by benchmarks/speed.py for the in-process epoch timings (the same loop).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "FashionMNIST" / "raw"


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST format): magic (2 zero bytes, type, ndim), big-endian dims, uint8 payload."""
    data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def stratified_split(labels: torch.Tensor, val_size: int, seed: int):
    """The same seeded, stratified (largest-remainder) split as lightsweep's data module."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * val_size / n
    take = exact.floor().long()
    remainder = val_size - int(take.sum())
    if remainder:
        take[torch.argsort(exact - take, descending=True)[:remainder]] += 1
    val_parts, train_parts = [], []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = (labels == cls).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def load_data(
    raw: Path = RAW, val_size: int = 5000, split_seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    train_x = read_idx(raw / "train-images-idx3-ubyte").reshape(-1, 784).float() / 255
    train_y = read_idx(raw / "train-labels-idx1-ubyte").long()
    test_x = read_idx(raw / "t10k-images-idx3-ubyte").reshape(-1, 784).float() / 255
    test_y = read_idx(raw / "t10k-labels-idx1-ubyte").long()
    train_idx, val_idx = stratified_split(train_y, val_size, split_seed)
    val_x, val_y = train_x[val_idx], train_y[val_idx]
    train_x, train_y = train_x[train_idx], train_y[train_idx]
    mean, std = train_x.mean().item(), train_x.std().item()
    return {
        "train": ((train_x - mean) / std, train_y),
        "val": ((val_x - mean) / std, val_y),
        "test": ((test_x - mean) / std, test_y),
    }


def make_net(model: str, seed: int) -> nn.Module:
    """lightsweep's defaults: softmax = Linear(784, 10); mlp = 784-256-128-10, ReLU, dropout 0.1."""
    torch.manual_seed(seed)
    if model == "softmax":
        return nn.Linear(784, 10)
    return nn.Sequential(
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(128, 10),
    )


@torch.inference_mode()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    net.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = net(xb)
        loss_sum += F.cross_entropy(logits, yb) * len(yb)
        correct += (logits.argmax(dim=1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def fit(
    model: str,
    data,
    epochs: int,
    *,
    seed: int = 42,
    batch_size: int = 128,
    lr: float = 1e-3,
    on_epoch_start=None,
    on_first_step=None,
    keep_best: Path | None = None,
):
    """Train `epochs` epochs; returns (net, per-epoch history, best state)."""
    net = make_net(model, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs) if model == "mlp" else None
    x, y = data["train"]
    n = len(x)
    history, best_acc, best_state = [], -1.0, None
    for epoch in range(epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        for start in range(0, n, batch_size):
            if on_first_step is not None:
                on_first_step()
                on_first_step = None
            idx = order[start : start + batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)  # = x[idx], y[idx], ~4x faster
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(dim=1) == yb).sum()
        if scheduler is not None:
            scheduler.step()
        val_loss, val_acc = evaluate(net, *data["val"])
        history.append(
            {
                "train/loss_epoch": loss_sum.item() / n,
                "train/acc": correct.item() / n,
                "val/loss": val_loss,
                "val/acc": val_acc,
            }
        )
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(net.state_dict())
            if keep_best is not None:
                torch.save(best_state, keep_best)
    return net, history, best_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["softmax", "mlp"], default="softmax")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=None, help="where the best weights go (default: a temp file)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # The benchmark's probe: wall-clock time of the first training step, written to this file.
    first_step_file = os.environ.get("BENCH_FIRST_STEP_FILE")

    def first_step() -> None:
        if first_step_file:
            Path(first_step_file).write_text(f"{time.time()!r} {time.process_time()!r}")

    data = load_data()
    out = args.out or Path(os.environ.get("TMPDIR", "/tmp")) / f"plain-{os.getpid()}.pt"
    net, history, best_state = fit(
        args.model, data, args.epochs, seed=args.seed, on_first_step=first_step, keep_best=out
    )
    net.load_state_dict(best_state)
    test_loss, test_acc = evaluate(net, *data["test"])
    print(f"test/acc={test_acc:.4f} test/loss={test_loss:.4f} val/acc={history[-1]['val/acc']:.4f}")
    if args.out is None:
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
