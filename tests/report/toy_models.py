"""A second toy network (same task, other weights), so a report has two models to compare on one dataset."""

import torch

from tests.evaluation.toy import LinearColourNet


class ShiftedColourNet(LinearColourNet):
    """LinearColourNet with lower biases: harder to push labels on, so its table differs."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.linear.bias.sub_(0.3)
