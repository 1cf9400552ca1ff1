"""Errors that the command line reports as one clear line (no traceback)."""


class MdlbenchError(Exception):
    """Base class: anything the user can fix or must know, stated in one line."""


class DataError(MdlbenchError):
    """A data set is missing, unreadable, empty, or does not match its recorded checksum."""


class ContainerError(MdlbenchError):
    """A ``.mdl`` container is malformed, truncated, corrupted or tampered with."""


class EnvironmentMismatch(MdlbenchError):
    """The decoder cannot reproduce the encoder's arithmetic on this machine."""


class DecodeError(MdlbenchError):
    """Decoding finished but the output does not match the recorded checksum."""
