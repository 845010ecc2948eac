"""Test helpers: a fault-injecting OpenAI-compatible embeddings server on 127.0.0.1.

``FaultServer()`` starts at once on a free loopback port (its own threads, no GIL needed to serve)
and stops on ``close()`` or at the end of a ``with`` block. Vectors are ``expected_embedding(text,
dim)``, so a test can check each vector came back next to its own text.

A request whose first input starts with ``@DIRECTIVE`` gets a fault (``@DIRECTIVE*N``: only the
first N times that exact first input is seen):

==================  =====================================================================
``@429``            429 with ``retry-after`` (the server's ``retry_after`` setting)
``@500`` etc.       that status (400, 401, 404, 408, 409, 500, 502, 503) with an OpenAI error body
``@noretry``        503 with ``x-should-retry: false``
``@retry400``       400 with ``x-should-retry: true``
``@malformed``      200 with a body that is not JSON
``@truncated``      200 whose body breaks off (connection cut)
``@wrongcount``     200 with one embedding missing
``@timeout``        answers after ``timeout_sleep`` seconds
``@slow=MS``        answers after MS milliseconds
``@ratelimit``      succeeds with ``x-ratelimit-*`` headers saying the budget is spent
==================  =====================================================================
"""

from ._native import FaultServer, expected_embedding

__all__ = ["FaultServer", "expected_embedding"]
