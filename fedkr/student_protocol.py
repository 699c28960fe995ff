"""The one student protocol every method in a comparison is trained with (in the spirit of RD3).

Distilled-data results are easy to inflate by giving one method a longer schedule, stronger
augmentation or a softer loss. So one protocol, fixed and written down, trains every network the
bench scores: fedkr's student, the naive-pooling student, the centralized and local-only models,
and each FedAvg site's local rounds.

- network: `CompactCNN` (3 conv stages, GroupNorm, ~0.1M parameters at width 32);
- loss: KL(target || softmax(logits / T)) x T^2 (Hinton et al.). Soft targets (fedkr) use the
  labels' temperature T = 4, also where `drawn-class-weight` mixes each image's drawn class,
  one-hot, into them (`server.relabel.mix_drawn_class`); one-hot targets (real images, naive
  pooling) use T = 1, where the loss is plain cross-entropy;
- augmentation: random translation by up to 2 px at 28 px (reflect padding), no flips;
- optimiser: AdamW, lr 2e-3, weight decay 5e-4, batch 64, one-cycle schedule (15% warm-up);
- length: `epochs` passes, with at least 600 optimisation steps so that small sets are not
  under-trained.

`RunConfig.student_config()` builds exactly `train_config(seed, soft=True)` for its own epochs
and temperature, so a run and a bench train the student the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedkr.shared.classifier import TrainConfig


@dataclass(frozen=True)
class StudentProtocol:
    epochs: int = 60
    temperature: float = 4.0
    channels: int = 32

    def train_config(self, seed: int, soft: bool) -> TrainConfig:
        """TrainConfig's defaults are the protocol; only epochs, the loss temperature and the seed vary."""
        return TrainConfig(epochs=self.epochs, temperature=self.temperature if soft else 1.0, seed=seed)
