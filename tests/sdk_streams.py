"""Warnings the official SDKs cause in stream tests, each filtered by the generator it names.

The openai and anthropic SDKs stop reading a stream at its last event and leave their own async
generators, and those of their HTTP client (httpx2, httpcore2), to the garbage collector; trio
reports each as a ResourceWarning. These are the SDKs' cleanup, not ours: a generator of the
gateway, or of the httpx2 client it uses (pyproject.toml names those), still fails the run.
"""

import pytest

SDK_STREAM_GENERATORS = pytest.mark.filterwarnings(
    # openai._streaming.AsyncStream.__aiter__ / _iter_events, SSEDecoder.aiter_bytes; the same
    # classes in anthropic._streaming.
    r"ignore:Async generator '(openai|anthropic)\._streaming\.[A-Za-z_.]+' was garbage "
    r"collected:ResourceWarning",
    # The SDKs' HTTP client: httpx2._models.Response.aiter_bytes / aiter_raw, and the httpcore2
    # connection streams under it.
    r"ignore:Async generator 'httpx2\._models\.Response\.aiter_[a-z]+' was garbage "
    r"collected:ResourceWarning",
    r"ignore:Async generator 'httpcore2\._async\.[A-Za-z0-9_.]+' was garbage "
    r"collected:ResourceWarning",
)
