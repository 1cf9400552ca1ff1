"""The push/pop interface every host entropy coder implements, and its generic round-trip check.

A codec is a push/pop pair (as in craystack): ``push(symbols_N, probs_NxV)`` codes one message
of symbols, each under its own categorical table, and ``pop(probs_NxV)`` recovers a message
given the same tables. Two coders implement it:

* :mod:`mdlbench.coding.range_coder`, a *queue*: pops return messages in the order they were
  pushed (first in, first out). Its encoder and decoder are separate objects.
* :mod:`mdlbench.coding.ans`, a *stack*: pops return the most recently pushed message first
  (last in, first out), which is what bits-back coding needs. One object both pushes and pops.

Within one message, both return the symbols in the order they were pushed; ``order`` only
says which message the next pop gets. Code that is written against :class:`Encoder` and
:class:`Decoder` (and replays messages in ``order``) works with either coder.

Nothing here imports JAX or constriction, so the protocol costs nothing to import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Order = Literal["queue", "stack"]
QUEUE: Order = "queue"
STACK: Order = "stack"


@runtime_checkable
class Encoder(Protocol):
    """The pushing half of a coder: appends messages to one bitstream.

    Attributes:
      order: ``"queue"`` (pops return messages first in, first out) or ``"stack"`` (last in,
        first out).
    """

    order: Order

    def push(self, symbols_N: np.ndarray, probs_NxV: np.ndarray) -> None:
        """Codes ``symbols_N[i]`` under the categorical table ``probs_NxV[i]``.

        Args:
          symbols_N: int symbols in ``[0, V)``; may be empty.
          probs_NxV: one probability table per symbol (rows summing to about 1; zeros allowed:
            every symbol stays codable); the decoder must pass bit-identical tables.
        """
        ...

    def num_bits(self) -> int:
        """Bits the payload would take if it were taken now (whole 32-bit words)."""
        ...

    def finish(self) -> bytes:
        """The payload: the compressed stream as little-endian 32-bit words."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """The popping half of a coder: recovers messages from a payload made by an :class:`Encoder`.

    Attributes:
      order: as :attr:`Encoder.order`; a decoder must pop messages in this order.
    """

    order: Order

    def pop(self, probs_NxV: np.ndarray) -> np.ndarray:
        """Recovers one message of ``len(probs_NxV)`` symbols (int32) coded under these tables."""
        ...


@runtime_checkable
class Coder(Encoder, Decoder, Protocol):
    """A coder that pushes and pops on one object (a stack: :class:`mdlbench.coding.ans.AnsStack`)."""


def roundtrip(new_encoder: Callable[[], Encoder], open_decoder: Callable[[bytes], Decoder],
              messages: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[bytes, list[np.ndarray]]:
    """Pushes ``messages`` into a fresh encoder, then pops them back from its payload alone.

    The decoder only sees the payload bytes and the tables, as a real receiver would; messages
    are popped in the coder's ``order`` (reversed for a stack), but returned in push order so
    callers compare ``decoded[i]`` with ``messages[i]`` whatever the coder.

    Args:
      new_encoder: makes an empty encoder, e.g. ``range_coder.Encoder``.
      open_decoder: makes a decoder from a payload, e.g. ``range_coder.Decoder``.
      messages: ``(symbols_N, probs_NxV)`` pairs, in push order.

    Returns:
      The payload and, for each message in push order, the symbols popped back.
    """
    enc = new_encoder()
    for symbols_N, probs_NxV in messages:
        enc.push(symbols_N, probs_NxV)
    payload = enc.finish()
    dec = open_decoder(payload)
    if enc.order not in (QUEUE, STACK) or dec.order != enc.order:
        # A queue's payload popped as a stack (or back) decodes garbage without any error.
        raise ValueError(f"encoder order {enc.order!r} and decoder order {dec.order!r} must be equal and "
                         f"{QUEUE!r} or {STACK!r}")
    idx = range(len(messages)) if enc.order == QUEUE else reversed(range(len(messages)))
    decoded: list[np.ndarray] = [np.zeros(0, np.int32)] * len(messages)
    for i in idx:
        decoded[i] = dec.pop(messages[i][1])
    return payload, decoded
