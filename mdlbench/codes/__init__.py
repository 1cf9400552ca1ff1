"""Codes: each turns data + a model family into a code length, and where it is a real code,
into a bitstream that a separate decoder process verifies."""
