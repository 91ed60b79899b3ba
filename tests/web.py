"""httpx's calls and clients, with one TLS context for the whole test process.

httpx builds a TLS context for every client, and `httpx.get()` and its siblings build a client
per call: each loads the CA bundle, 35-50 ms of CPU on the CI machine, though the servers under
test speak plain HTTP on loopback. The suite's polling loops make thousands of such calls;
profiled (py-spy on the pytest process), they were two thirds of its CPU, taken from the
servers the tests wait on. These are the same calls and clients, with one context built once.
It is shared by threads too, because the tests speak plain HTTP and no connection ever uses
it (httpcore sets a context's ALPN protocols for each TLS connection it opens, which makes a
context shared by threads that open TLS connections unsafe). The tests' `runyard.client`
clients are given it too (`verify=`).
"""

from __future__ import annotations

from functools import partial

import httpx

TLS = httpx.create_ssl_context()

get = partial(httpx.get, verify=TLS)
post = partial(httpx.post, verify=TLS)
put = partial(httpx.put, verify=TLS)
patch = partial(httpx.patch, verify=TLS)
delete = partial(httpx.delete, verify=TLS)
request = partial(httpx.request, verify=TLS)
stream = partial(httpx.stream, verify=TLS)
Client = partial(httpx.Client, verify=TLS)
AsyncClient = partial(httpx.AsyncClient, verify=TLS)
