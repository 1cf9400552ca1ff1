"""Checkpoints of a running prequential encode, so that a killed job resumes where it stopped.

A checkpoint is taken at a *segment boundary* of the bitstream (every ``code.checkpoint_every``
steps; see ``mdlbench.codes.prequential``). There the range coder has just been sealed, so its
whole state is the bytes of the sealed segments; together with the arrays of the coding
program (parameters, optimiser state, carried model state, previous byte per stream) and a
small cursor (next step, bytes seen, ideal bits so far, elapsed time) that is everything the
encoder needs. The arrays are restored bit for bit, so the resumed run executes the same
compiled step on the same inputs and writes a container byte-identical to an uninterrupted run.

Storage is orbax (``CheckpointManager``): each checkpoint is written into a temporary directory
and renamed into place when complete, so a kill during a save leaves the previous checkpoint
intact. Only the latest checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench.errors import MdlbenchError


@dataclasses.dataclass
class Cursor:
    """Where the encoder stands at a segment boundary.

    Attributes:
      step: the next coding step to run.
      bytes_seen: data bytes coded so far.
      ideal_bits: Σ −log2 p of those bytes.
      elapsed_s: coding-loop seconds spent so far (summed over resumes).
      segments: byte lengths of the sealed bitstream segments, in order.
      estimate_bits: Σ of every step's pre-update training loss in bits (Rae's estimate).
    """

    step: int = 0
    bytes_seen: int = 0
    ideal_bits: float = 0.0
    elapsed_s: float = 0.0
    segments: list[int] = dataclasses.field(default_factory=list)
    estimate_bits: float = 0.0


class Checkpoints:
    """The checkpoints of one run directory, tied to one config and one input."""

    def __init__(self, directory: Path, config_sha256: str, data_sha256: str):
        self.directory = Path(directory)
        self.config_sha256 = config_sha256
        self.data_sha256 = data_sha256
        self._manager = None

    def _mgr(self):
        if self._manager is None:
            import orbax.checkpoint as ocp

            self._manager = ocp.CheckpointManager(
                self.directory.resolve(),
                options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True))
        return self._manager

    def _meta_path(self) -> Path | None:
        """The JSON cursor of the latest finished checkpoint, read without JAX or orbax."""
        if not self.directory.is_dir():
            return None
        steps = sorted(int(p.name) for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit())
        for step in reversed(steps):
            meta = self.directory / str(step) / "meta" / "metadata"
            if meta.is_file():
                return meta
        return None

    def peek(self) -> Cursor | None:
        """The latest checkpoint's cursor (None if there is none); refuses a foreign one."""
        path = self._meta_path()
        if path is None:
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise MdlbenchError(f"checkpoint {path.parent.parent} is unreadable ({e}); delete {self.directory} "
                                "to start over") from None
        if meta.get("config_sha256") != self.config_sha256:
            raise MdlbenchError(f"{self.directory} holds a checkpoint of a different config (sha256 "
                                f"{str(meta.get('config_sha256'))[:12]}..., this run {self.config_sha256[:12]}...); "
                                "refusing to resume: use another run dir or delete the checkpoint")
        if meta.get("data_sha256") != self.data_sha256:
            raise MdlbenchError(f"{self.directory} holds a checkpoint of different input data; refusing to resume: "
                                "use another run dir or delete the checkpoint")
        return Cursor(**meta["cursor"])

    def restore(self, like_carry: Any) -> tuple[Any, Cursor, bytes] | None:
        """(carry, cursor, sealed payload) of the latest checkpoint, shaped like ``like_carry``."""
        cursor = self.peek()
        if cursor is None:
            return None
        import jax
        import orbax.checkpoint as ocp

        mgr = self._mgr()
        like = {"carry": like_carry, "payload": np.zeros(1 + sum(cursor.segments), np.uint8)}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        got = mgr.restore(cursor.step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        # One leading pad byte: orbax refuses zero-size arrays (the first checkpoint may hold none).
        payload = np.asarray(got.state["payload"]).tobytes()[1:]
        return got.state["carry"], cursor, payload

    def save(self, carry: Any, cursor: Cursor, sealed_payload: bytes) -> None:
        """Writes a checkpoint at ``cursor.step`` (atomically; replaces the previous one)."""
        import orbax.checkpoint as ocp

        meta = {"config_sha256": self.config_sha256, "data_sha256": self.data_sha256,
                "cursor": dataclasses.asdict(cursor)}
        state = {"carry": carry, "payload": np.frombuffer(b"\0" + sealed_payload, np.uint8)}
        mgr = self._mgr()
        mgr.save(cursor.step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
        mgr.wait_until_finished()

    def remove(self) -> None:
        """Deletes all checkpoints (once the container is safely written)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        shutil.rmtree(self.directory, ignore_errors=True)
