"""Stopping on SIGTERM or Ctrl-C (SIGINT) without losing work (docs/reliability.md).

The CLI runs every command inside ``handling_signals()``, which turns the first SIGINT or
SIGTERM into ``Interrupted``. Where stopping at once could leave half-updated state (a fit's
training loop), the signal is deferred instead: ``InterruptCheckpoint`` lets the running
training step, or the epoch's evaluation, finish, saves ``last.ckpt`` there and stops the
fit. A second signal stops at once, without a checkpoint. The CLI prints one line,
``error: interrupted (SIGTERM) ...; resume with: ...``, and exits with 128 + the signal
number: 130 after SIGINT, 143 after SIGTERM.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# set for a cell's fit run as a child process of a grid: the grid reports a stop, not the child
CHILD_ENV = "HALLUC_CL_CHILD"


def resume_command(args: list[str], replace: dict[str, str]) -> str:
    """``halluc-cl <args>`` with the options in ``replace`` set to its values (both the
    ``--key value`` and ``--key=value`` forms of the old ones are dropped)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.split("=", 1)[0] in replace:
            skip = "=" not in arg
            continue
        kept.append(arg)
    for key, value in replace.items():
        kept += [key, value]
    return "halluc-cl " + shlex.join(kept)


class Interrupted(BaseException):
    """A command stopped by SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so
    that ``except Exception`` lets it through.

    Attributes:
        signum: The signal.
        forced: A second signal arrived: stopped at once, without a checkpoint.
        details: Clauses of the message (where it stopped, what was kept).
        resume: Options that replace the interrupted command's own in the resume command
            (``{}``: run the same command again).
    """

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signum)
        self.signum, self.forced = int(signum), forced
        self.details: list[str] = []
        self.resume: dict[str, str] = {}

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self, args: list[str]) -> str:
        """The one line the CLI prints (after ``error: ``)."""
        name = signal.Signals(self.signum).name
        head = f"interrupted ({name}{', twice: stopped at once' if self.forced else ''})"
        return "; ".join([head, *self.details, f"resume with: {resume_command(args, self.resume)}"])


class SignalGuard:
    """Where SIGINT and SIGTERM go while a command runs (one per process: ``GUARD``)."""

    def __init__(self) -> None:
        self.active = False
        self.pending: int | None = None  # a deferred signal not acted on yet
        self._deferring = 0

    def handle(self, signum: int, frame) -> None:
        if self.pending is not None or not self._deferring:
            raise Interrupted(signum, forced=self.pending is not None)
        self.pending = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler must not re-enter a buffered stream
        os.write(2, f"\nhalluc-cl: {name} received; stopping at the end of this training step "
                    "(or epoch) with a checkpoint; send it again to stop at once, without one\n"
                    .encode())

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self.handle)

    def defer(self) -> None:
        """Record signals from now on instead of raising (until ``release``)."""
        self._deferring += 1

    def release(self) -> None:
        self._deferring = max(0, self._deferring - 1)

    def check(self) -> None:
        """Raise ``Interrupted`` for a signal that was deferred and not acted on yet."""
        if self.pending is not None:
            raise Interrupted(self.pending)


GUARD = SignalGuard()


@contextmanager
def handling_signals() -> Iterator[SignalGuard]:
    """Route SIGINT and SIGTERM to ``GUARD`` for the block (main thread only), then restore
    the previous handlers."""
    if threading.current_thread() is not threading.main_thread() or GUARD.active:
        yield GUARD
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    GUARD.active, GUARD.pending, GUARD._deferring = True, None, 0
    GUARD.install()
    try:
        yield GUARD
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        GUARD.active, GUARD.pending, GUARD._deferring = False, None, 0
