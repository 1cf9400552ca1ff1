"""Image classifiers for supervised label coding: an MLP and a small CNN, with named sizes.

Flax modules only (no optimiser, no logging). Both take ``x_BxHxW`` float32 inputs already
scaled to [0, 1] and return ``logits_BxK``. Sizes are picked by name from :data:`CLASSIFIERS`
so that a table row names a model the same way everywhere; parameter counts are always
measured from the initialised parameters, never read from the name.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from mdlbench.config import ConfigError


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened image.

    Attributes:
      hidden: widths of the hidden layers (empty = multinomial logistic regression).
      n_classes: number of outputs K.
    """

    hidden: tuple[int, ...]
    n_classes: int

    @nn.compact
    def __call__(self, x_BxHxW):
        h = x_BxHxW.reshape(x_BxHxW.shape[0], -1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.n_classes)(h)


class SmallCNN(nn.Module):
    """3x3 conv + ReLU + 2x2 max-pool stages, then one hidden dense layer.

    Attributes:
      channels: output channels of each conv stage.
      dense: width of the hidden dense layer.
      n_classes: number of outputs K.
    """

    channels: tuple[int, ...]
    dense: int
    n_classes: int

    @nn.compact
    def __call__(self, x_BxHxW):
        h = x_BxHxW[..., None]
        for c in self.channels:
            h = nn.relu(nn.Conv(c, (3, 3), padding="SAME")(h))
            h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(self.dense)(h))
        return nn.Dense(self.n_classes)(h)


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """A named classifier size.

    Attributes:
      family: ``mlp`` or ``cnn``.
      hidden: MLP hidden widths (``mlp``).
      channels: conv channels per stage (``cnn``).
      dense: hidden dense width (``cnn``).
    """

    family: str
    hidden: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()
    dense: int = 0


CLASSIFIERS: dict[str, ClassifierSpec] = {
    "logreg": ClassifierSpec("mlp", hidden=()),
    "mlp_tiny": ClassifierSpec("mlp", hidden=(32,)),
    "mlp_small": ClassifierSpec("mlp", hidden=(128,)),
    "mlp_medium": ClassifierSpec("mlp", hidden=(256, 256)),
    "mlp_large": ClassifierSpec("mlp", hidden=(512, 512)),
    "cnn_tiny": ClassifierSpec("cnn", channels=(8, 16), dense=32),
    "cnn_small": ClassifierSpec("cnn", channels=(16, 32), dense=64),
}


def build_classifier(name: str, n_classes: int) -> nn.Module:
    """The flax module for the named size.

    Raises:
      ConfigError: unknown name.
    """
    if name not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")
    spec = CLASSIFIERS[name]
    if spec.family == "mlp":
        return MLP(spec.hidden, n_classes)
    return SmallCNN(spec.channels, spec.dense, n_classes)

