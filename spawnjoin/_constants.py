"""Defaults shared by the network backends (timeouts, retries, limits). Seconds unless named otherwise."""

from __future__ import annotations

# Timeouts.
DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection."""
DEFAULT_READ_TIMEOUT = 60.0
"""Seconds without any data on a stream before it counts as stalled (retryable)."""
DEFAULT_REQUEST_DEADLINE = 600.0
"""Seconds one request may take in total, every retry included."""

# Retries.
DEFAULT_MAX_RETRIES = 4
"""Retries after the first attempt of one request."""
INITIAL_RETRY_DELAY = 0.5
"""Backoff before the first retry; it doubles each retry."""
MAX_RETRY_DELAY = 8.0
"""Cap on the exponential backoff."""
MAX_RETRY_AFTER = 60.0
"""Cap on a server's Retry-After: a longer wait is clipped to this."""
RETRY_JITTER = 0.25
"""Fraction of the backoff removed at random, so clients that failed together do not retry together."""

# Multi-endpoint routing.
DEFAULT_DOWN_FOR = 30.0
"""Seconds an endpoint that refused connections is skipped before it is tried again."""

# Scripted backend.
SCRIPTED_YIELD_EVERY = 16
"""The scripted backend hands control to the event loop once per this many chunks."""
