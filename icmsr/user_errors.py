"""A user's mistake at the command line: one ``error: ...`` line and exit status 2.

Code raises :class:`UserError` (or one of its subclasses, which also derive from
the built-in type callers already catch) where it detects a mistake in what the
user gave: a config key or value, a file or folder named on the command line, an
output location that cannot be written. Every tool's ``main`` runs under
:func:`run_tool`, which turns exactly these exceptions into one line on stderr and
exit status 2. Anything else is a bug and keeps its traceback.

``--debug`` (added by :func:`add_debug_flag`) or the environment variable
``ICMSR_DEBUG=1`` shows the traceback of a user error too.

This module imports nothing from the toolkit, so every layer can raise its errors.
"""
import argparse
import os
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

#: Environment variable that shows the traceback of a user error (any value but ``''``/``0``).
DEBUG_ENV = 'ICMSR_DEBUG'
#: Exit status of a user error (argparse's, for a command line it rejects).
USER_ERROR_STATUS = 2


class UserError(Exception):
    """A mistake in what the user gave; its message names the file or key and what to do."""


class ConfigError(UserError, ValueError):
    """A config key or value that cannot work (the message names the key)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or the config names) does not exist."""


class OutputNotWritableError(UserError, OSError):
    """An output location the user named cannot be written."""


class UnusableInputError(UserError, RuntimeError):
    """A named input exists but cannot be used (unreadable file, unavailable device)."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the traceback of a user error) to a tool's parser.

    Args:
        parser: The tool's parser.
    """
    parser.add_argument('--debug', action='store_true',
                        help=f'show the full traceback of an error (or set {DEBUG_ENV}=1)')


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """Whether the traceback of a user error is wanted.

    Args:
        argv: The command line (default ``sys.argv[1:]``).

    Returns:
        True with ``--debug`` among the arguments or ``ICMSR_DEBUG`` set to a value
        other than ``''``/``'0'``.
    """
    argv = sys.argv[1:] if argv is None else argv
    return '--debug' in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def run_tool(main: Callable[[Optional[List[str]]], Optional[int]],
             argv: Optional[List[str]] = None) -> int:
    """Run a tool's ``main(argv)``; a :class:`UserError` becomes one line and status 2.

    The flag is read from ``argv`` itself, so a mistake found while the
    arguments are parsed is covered too.

    Args:
        main: The tool's entry point; returns its exit status (None means 0).
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: ``main``'s, or 2 after a user error.

    Raises:
        UserError: Again, with its traceback, when :func:`debug_requested`.
    """
    try:
        status = main(argv)
    except UserError as err:
        if debug_requested(argv):
            raise
        message = ' '.join(str(err).splitlines())
        print(f'error: {message}', file=sys.stderr, flush=True)
        return USER_ERROR_STATUS
    return 0 if status is None else status


def check_input_exists(path: str, what: str) -> None:
    """Raise :class:`MissingInputError` naming ``what`` when nothing exists at ``path``.

    Args:
        path: A file or folder the user named.
        what: How the user named it (``'--input'``, ``'checkpoint'``...).

    Raises:
        MissingInputError: ``path`` does not exist.
    """
    if not os.path.exists(os.path.expanduser(path)):
        raise MissingInputError(f'{what} {path!r} does not exist; check the path.')


def _existing_ancestor(folder: str) -> str:
    """``folder`` itself when it exists, else its nearest existing parent."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _write_problem(folder: str, create: bool) -> Optional[str]:
    """Why files cannot be written in ``folder``, or None when they can.

    A write probe, not ``os.access``: permission bits say nothing for root, and
    nothing about read-only mounts. Without ``create`` a missing folder is judged
    by its nearest existing parent, and nothing is left behind.
    """
    probe_dir = folder if create else _existing_ancestor(folder)
    if os.path.isfile(probe_dir):  # the folder, or a folder above it, is a file
        return f'{probe_dir!r} is an existing file, not a folder'
    try:
        if create:
            os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix='.write-check-'):
            pass
    except OSError as err:
        ancestor = _existing_ancestor(folder)
        if os.path.isfile(ancestor):
            return f'{ancestor!r} is an existing file, not a folder'
        return err.strerror or str(err)
    return None


def check_output_folder(folder: str, what: str, create: bool = False) -> None:
    """Make sure files can be written in ``folder``, before any work is done.

    Args:
        folder: The output folder.
        what: The flag or key that named it (``'--output'``).
        create: Create the folder now; otherwise a missing folder is left missing
            (so a later failure leaves nothing behind) and its nearest existing
            parent is probed.

    Raises:
        OutputNotWritableError: naming the folder and the flag.
    """
    problem = _write_problem(folder, create)
    if problem:
        raise OutputNotWritableError(
            f'{what} {folder!r} is not writable as a folder ({problem}); choose another {what}.')


def check_output_file(path: str, what: str) -> None:
    """Make sure ``path`` can be written as a file: its folder is writable, it is no folder.

    Args:
        path: The output file.
        what: The flag that named it (``'--out'``).

    Raises:
        OutputNotWritableError: naming the path and the flag.
    """
    if os.path.isdir(path):
        raise OutputNotWritableError(f'{what} {path!r} is a folder; give a file name.')
    folder = os.path.dirname(os.path.abspath(path))
    problem = _write_problem(folder, create=False)
    if problem:
        raise OutputNotWritableError(f'{what} {path!r} is not writable: its folder {folder!r} '
                                     f'is not usable ({problem}); choose another {what}.')
