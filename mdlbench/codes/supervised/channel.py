"""The one place where encoder and decoder differ: labels in or labels out.

An online code is written once as a pass over the data that, at each step, computes coding
probabilities and calls ``channel.code(probs)``. On the encoder's side the channel pushes the
known labels into the range coder and returns them; on the decoder's side it pops labels from
the bitstream and returns those. Everything else (training, probabilities) is the same code on
both sides, which is what makes the decode bit-exact.
"""

from __future__ import annotations

import numpy as np

from mdlbench.coding import range_coder
from mdlbench.codes.supervised.learner import label_bits


class EncodeChannel:
    """Pushes known labels, in order, into one range-coded stream."""

    def __init__(self, y: np.ndarray):
        self._y = np.asarray(y, np.int32)
        self._pos = 0
        self._enc = range_coder.Encoder()
        self.ideal_bits = 0.0
        self.correct = 0

    def code(self, probs_NxK: np.ndarray) -> np.ndarray:
        """Codes the next ``len(probs_NxK)`` labels; returns them."""
        y = self._y[self._pos:self._pos + len(probs_NxK)]
        self._pos += len(y)
        self._enc.push(y, probs_NxK)
        self.ideal_bits += float(label_bits(probs_NxK, y).sum())
        self.correct += int((probs_NxK.argmax(-1) == y).sum())
        return y

    def finish(self) -> bytes:
        """The payload (little-endian 32-bit words)."""
        return self._enc.finish()


class DecodeChannel:
    """Pops labels from a payload made by :class:`EncodeChannel` under the same probabilities."""

    def __init__(self, payload: bytes):
        self._dec = range_coder.Decoder(payload)
        self.ideal_bits = 0.0
        self.correct = 0

    def code(self, probs_NxK: np.ndarray) -> np.ndarray:
        """Decodes the next ``len(probs_NxK)`` labels."""
        y = self._dec.pop(probs_NxK)
        self.ideal_bits += float(label_bits(probs_NxK, y).sum())
        self.correct += int((probs_NxK.argmax(-1) == y).sum())
        return y
