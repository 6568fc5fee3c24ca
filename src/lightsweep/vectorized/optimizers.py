"""The members' own optimizers and LR schedulers, presented to Lightning as one of each.

Each member's optimizer and scheduler are the ones its separate job builds (torch's, or any package's
with torch's interface), over its own parameters (views into the stacked weights). These containers
only hold and step them: one `step()` per batch steps every member that is still training, so
Lightning counts one optimizer step per batch, as for a single run; their checkpoint state is the
members' own state dicts, and a state saved for other members is refused.
"""

from __future__ import annotations

import torch

from lightsweep.errors import LightsweepError


def check_members(kind: str, saved: list[str], members) -> None:
    """A group checkpoint's state belongs to these members, in this order (Lightning pairs saved and
    new optimizers without looking)."""
    current = [member.label for member in members]
    if list(saved) != current:
        raise LightsweepError(
            f"this group checkpoint's {kind} state was saved for other members ({', '.join(saved)}), not "
            f"{', '.join(current)}: resume the sweep with the overrides it was started with"
        )


class MemberOptimizers(torch.optim.Optimizer):
    """Every member's own optimizer, stepped as one: `step(closure)` runs Lightning's closure (forward,
    backward, the members' gradient views and clipping) once, then each stepping member's optimizer."""

    def __init__(self, weights: list[torch.nn.Parameter], members) -> None:
        super().__init__(list(weights), {})
        self.members = list(members)
        self.saving = None  # the member whose own checkpoint is being written: its state is all it takes

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for member in self.members:
            if member.stepping:
                member.optimizer.step()
        return loss

    def state_dict(self) -> dict:
        members = [self.saving] if self.saving is not None else self.members
        return {
            "members": [member.label for member in members],
            "states": [member.optimizer.state_dict() for member in members],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        check_members("optimizer", state_dict["members"], self.members)
        for member, state in zip(self.members, state_dict["states"]):
            member.optimizer.load_state_dict(state)


class MemberSchedulers:
    """Every member's own LR scheduler, as the one Lightning checkpoints and asks to step after each
    batch; `StackedClassifier.lr_scheduler_step` steps each member's on its own interval."""

    def __init__(self, optimizer: MemberOptimizers, members) -> None:
        self.optimizer = optimizer
        self.members = list(members)

    def state_dict(self) -> dict:
        members = [self.optimizer.saving] if self.optimizer.saving is not None else self.members
        return {
            "members": [member.label for member in members],
            "states": [member.scheduler.scheduler.state_dict() if member.scheduler else None for member in members],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        check_members("scheduler", state_dict["members"], self.members)
        for member, state in zip(self.members, state_dict["states"]):
            if member.scheduler is not None and state is not None:
                member.scheduler.scheduler.load_state_dict(state)
