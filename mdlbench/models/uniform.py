"""The uniform model: every byte value has probability exactly 1/256 (8 bits per byte).

It has no parameters; it exists so that the whole coding pipeline can be checked against a
number known in advance.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Uniform(nn.Module):
    vocab: int = 256

    def _zeros(self, inputs):
        # 0 * input rather than a literal constant: XLA may not fold it (inf * 0 is nan), which
        # keeps it from spending seconds constant-folding the loss of a parameter-free model.
        return jnp.zeros((*inputs.shape, self.vocab), jnp.float32) + 0.0 * inputs[..., None].astype(jnp.float32)

    def forward(self, inputs_BxT, state: Any = None):
        return self._zeros(inputs_BxT), state

    def __call__(self, inputs_BxT, state: Any = None):
        return self._zeros(inputs_BxT)

    def decode(self, input_B, cache: Any, pos):
        return self._zeros(input_B), cache

    def zero_state(self, batch: int):
        return ()

    def init_cache(self, state: Any, batch: int):
        return ()

    def next_state(self, cache: Any, state: Any):
        return state
