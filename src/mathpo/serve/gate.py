"""The per-model waiting line of `mathpo serve`: one request generates at a time, a bounded number
wait behind it in arrival order, the rest are refused at once (`Busy`, HTTP 429 / "busy" on the page).

A `Ticket` is one request's place. The generation worker thread (engine.py) takes the model with
`wait_turn()` and gives it back with `leave()` itself, so the model is freed when generation ends,
whether or not anyone still reads the stream: a client that hung up, or a stream object waiting
for the garbage collector, never holds the model. `cancel()` (client gone) stops a running
generation at its next token and takes a waiting request out of the line at once.
"""

from __future__ import annotations

import threading
from collections import deque

from ..errors import UserError


class Busy(Exception):
    """The model is generating and its waiting line is full."""


class Gate:
    """One request runs at a time; at most `max_waiting` more may wait; the rest are refused."""

    def __init__(self, max_waiting: int):
        if max_waiting < 0:
            raise UserError(f"--queue must be >= 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self._held = 0  # admitted and not released: running + waiting (+ admitted, not yet started)
        self._line: deque[Ticket] = deque()  # tickets waiting for the model, oldest first
        self._running = False
        self._cond = threading.Condition()

    @property
    def load(self) -> int:
        return self._held

    def admit(self) -> Ticket:
        """A place in line, or Busy when the line is full. Release the ticket when done."""
        with self._cond:
            if self._held >= 1 + self.max_waiting:
                raise Busy(f"busy: {self._held - 1} request(s) already waiting for this model; try again shortly")
            self._held += 1
        return Ticket(self)


class Ticket:
    def __init__(self, gate: Gate):
        self._gate = gate
        self.cancelled = threading.Event()  # stop: the client is gone, the consumer stopped, or it is over
        self.done = threading.Event()  # the place is given back
        self.steps = 0  # decoding steps generated for this request (the worker counts them)
        self._started = False
        self._released = False

    def start(self) -> bool:
        """The worker is about to wait for the model; False when the request was cancelled already."""
        with self._gate._cond:
            self._started = not self.cancelled.is_set()
            return self._started

    def wait_turn(self) -> bool:
        """Block until the model is free and every earlier waiter went first (FIFO); then hold it.
        False (without the model) when cancelled while waiting."""
        gate = self._gate
        with gate._cond:
            gate._line.append(self)
            while gate._running or gate._line[0] is not self:
                if self.cancelled.is_set():
                    gate._line.remove(self)
                    gate._cond.notify_all()
                    return False
                gate._cond.wait()
            gate._line.popleft()
            gate._running = True
            return True

    def leave(self) -> None:
        """Give the model back (after `wait_turn()` returned True)."""
        with self._gate._cond:
            self._gate._running = False
            self._gate._cond.notify_all()

    def cancel(self) -> None:
        """The client is gone: stop at the next token, or leave the line; a ticket whose generation
        never started gives its place back here."""
        with self._gate._cond:
            self.cancelled.set()
            started = self._started
            self._gate._cond.notify_all()
        if not started:
            self.release()

    def release(self) -> None:
        with self._gate._cond:
            if self._released:
                return
            self._released = True
            self._gate._held -= 1
        self.done.set()

    def __del__(self):  # a ticket dropped unused (client gone before its stream started) frees its place
        self.release()
