"""The process's one TLS client context.

Building an `ssl.SSLContext` loads the CA bundle: 15-40 ms of CPU each time on a
loaded 2-core machine. httpx builds one per client unless it is given one, and
`gpt4batch run -n` opened a client per nsqd HTTP call (create the channels,
delete five of them): most of a one-record run's wall time after imports. Every
client of this process verifies against the same bundle, so they share one.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def client_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's bundle, SSL_CERT_FILE/DIR honoured),
    built on first use and shared by every client after it."""
    return httpx.create_ssl_context()
