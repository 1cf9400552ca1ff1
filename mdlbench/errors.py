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


def one_line(prog: str, run) -> int:
    """Runs ``run()`` (a command returning its exit status) and turns the errors a user can fix
    into one ``<prog>: error: ...`` line on stderr and exit status 2: no traceback."""
    import sys

    def fail(msg: str) -> int:
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2

    try:
        return int(run() or 0)
    except MdlbenchError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return fail("interrupted")
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        return fail(f"{e.strerror or e}: {e.filename}")
