"""No request text in logs by default.

The request path's own log calls carry no request data (a test checks their arguments), but an exception
raised while handling a request may: its message is whatever the raising code put there (a decoder quoting
the input, a KeyError holding a key from the body). `WithholdExceptionText` keeps a logged traceback's
frames and exception types and replaces each exception's message by a placeholder. Opt out, for
debugging only, with AIGRID_LOG_REQUEST_TEXT=1.
"""

from __future__ import annotations

import logging
import os
import traceback

OPT_IN_ENV = "AIGRID_LOG_REQUEST_TEXT"
WITHHELD = "<message withheld: it may quote request text; AIGRID_LOG_REQUEST_TEXT=1 shows it>"


def request_text_allowed() -> bool:
    return os.environ.get(OPT_IN_ENV, "") == "1"


def _format(exc: BaseException) -> str:
    te = traceback.TracebackException.from_exception(exc)
    out: list[str] = []
    for part in _chain(te):
        out.append("".join(part.stack.format()))
        out.append(f"{part.exc_type.__module__}.{part.exc_type.__qualname__}: {WITHHELD}\n" if part.exc_type else "")
    return "Traceback (most recent call last):\n" + "".join(out).rstrip("\n")


def _chain(te: traceback.TracebackException) -> list[traceback.TracebackException]:
    seq: list[traceback.TracebackException] = []
    cur: traceback.TracebackException | None = te
    while cur is not None and len(seq) < 20:
        seq.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return list(reversed(seq))


class WithholdExceptionText(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = _format(record.exc_info[1])
            record.exc_info = None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """On every handler of the root logger (what `aigrid serve` logs through), unless opted out."""
    if request_text_allowed():
        return
    root = logger or logging.getLogger()
    handlers = list(root.handlers) or [logging.lastResort]
    for h in handlers:
        if h is not None and not any(isinstance(f, WithholdExceptionText) for f in h.filters):
            h.addFilter(WithholdExceptionText())
