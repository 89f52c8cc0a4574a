"""Resource limits the user never has to set: the open-file limit, the bounds on a
request head, and the counts of connections closed without a record.

A record is one CONNECT tunnel. A connection that never sent a request head (a port
scanner, a browser's idle preconnect, a stalled client), sent one too big to be a
request, or was refused by --proxy-auth, is no tunnel: it is counted, so the run's
summary and the UI header still show it, but it writes nothing a stranger chose.
"""

from __future__ import annotations

import resource

HEAD_MAX_BYTES = 64 * 1024  # a head that has not ended by then is no request

# Counted, never recorded: the key (as stats() and the UI header show it) and its meaning.
AUTH_REFUSED = "auth_refused"  # refused by --proxy-auth, or unparsable before authenticating
HEAD_TIMED_OUT = "head_timeout"  # no complete request head within the head timeout
HEAD_TOO_LARGE = "head_too_large"  # a request head over HEAD_MAX_BYTES
UNRECORDED_KEYS = (AUTH_REFUSED, HEAD_TIMED_OUT, HEAD_TOO_LARGE)

# A hard limit of "unlimited" is not a number setrlimit accepts everywhere (macOS wants
# OPEN_MAX at most): this many is more than a forward proxy on one loop can use.
_UNLIMITED_CAP = 1 << 20


class Unrecorded:
    """Connections closed without a record, by reason."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(UNRECORDED_KEYS, 0)

    def add(self, key: str) -> int:
        self.counts[key] += 1
        return self.counts[key]

    def nonzero(self) -> dict[str, int]:
        return {k: n for k, n in self.counts.items() if n}

    def line(self) -> str | None:
        """`not recorded: auth refused 2, head timeout 300` for the run's summary; None if none."""
        parts = [f"{k.replace('_', ' ')} {n}" for k, n in self.nonzero().items()]
        return f"not recorded: {', '.join(parts)}" if parts else None


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after).

    Every tunnel holds two descriptors (client and upstream), so the usual soft limit
    of 1024 caps a proxy near 500 tunnels while the hard limit allows far more.
    Raises OSError/ValueError if the system refuses.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, target
    return soft, soft
