"""An example tenant component in Python, built with componentize-py.

It serves the same routes as the hostile guest's hello and key-value ones
(see guest/README.md), /connect and /fetch, through the standard interfaces only: wasi:http's
incoming handler, wasi:keyvalue@0.2.0-draft (store and atomics) and
wasi:logging. Nothing in it is specific to this runner.
"""

import socket
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, outgoing_handler, store, streams

try:
    from wit_world.imports import logging
except ImportError:
    # Built for the `serve` world, which leaves wasi:logging out so that
    # `wasmtime serve` runs it too (bench/reuse.sh): no log line then.
    logging = None
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)

# wasi:io streams take at most this many bytes per blocking write.
CHUNK = 4096


class Reply(Exception):
    """A response that ends a route early: an error, or a refusal."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.body = text.encode()


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        try:
            status, body, kind = route(request)
        except Reply as reply:
            status, body, kind = reply.status, reply.body, "text/plain; charset=utf-8"
        respond(response_out, status, body, kind)


def route(request):
    target = urlsplit(request.path_with_query() or "/")
    query = parse_qs(target.query, keep_blank_values=True)
    method = request.method()
    path = target.path
    if path == "/hello":
        expect(method, Method_Get, "GET")
        return text(200, "hello")
    if path == "/burn":
        # A loop as long as asked: past the fuel budget the runner stops it.
        expect(method, Method_Get, "GET")
        iters = int_param(query, "iters")
        count = 0
        for _ in range(iters):
            count += 1
        return text(200, str(count))
    if path == "/connect":
        # Guests have no network: the runner links wasi:sockets (CPython
        # imports it always) with every operation denied.
        expect(method, Method_Get, "GET")
        port = int_param(query, "port")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.connect(("127.0.0.1", port))
        except OSError as error:
            return text(403, f"refused: {error}")
        return text(200, "connected")
    if path == "/fetch":
        # An outgoing request through wasi:http's outgoing handler; the host
        # decides whether it may go out.
        expect(method, Method_Get, "GET")
        return fetch(query.get("url", [""])[0])
    if path.startswith("/kv/"):
        key = decode_key(path[len("/kv/"):])
        if isinstance(method, Method_Get):
            value = call(lambda: open_bucket(query).get(key))
            if value is None:
                return text(404, "key not found")
            return 200, value, "application/octet-stream"
        if isinstance(method, Method_Put):
            value = read_body(request)
            call(lambda: open_bucket(query).set(key, value))
            if logging is not None:
                logging.log(logging.Level.DEBUG, "kv", f"set {key!r}: {len(value)} bytes")
            return 204, b"", None
        raise Reply(405, "method not allowed; allowed: GET, PUT")
    if path.startswith("/incr/"):
        key = decode_key(path[len("/incr/"):])
        expect(method, Method_Post, "POST")
        by = int_param(query, "by", 1)
        value = call(lambda: atomics.increment(open_bucket(query), key, by))
        return text(200, str(value))
    raise Reply(404, "no such route")


def text(status, message):
    return status, message.encode(), "text/plain; charset=utf-8"


def expect(method, wanted, allowed):
    if not isinstance(method, wanted):
        raise Reply(405, f"method not allowed; allowed: {allowed}")


def int_param(query, name, default=None):
    values = query.get(name)
    if not values:
        if default is None:
            raise Reply(400, f"missing query parameter {name}")
        return default
    try:
        return int(values[0])
    except ValueError:
        raise Reply(400, f"invalid {name}: {values[0]!r}")


def decode_key(raw):
    try:
        key = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Reply(400, "invalid key: not UTF-8")
    if not key:
        raise Reply(400, "empty key")
    return key


def open_bucket(query):
    return store.open(query.get("bucket", [""])[0])


def call(operation):
    """Runs a store call, turning its error into the status the Rust guests give."""
    try:
        return operation()
    except Err as err:
        error = err.value
        if isinstance(error, store.Error_NoSuchStore):
            raise Reply(404, "store error: no-such-store")
        if isinstance(error, store.Error_AccessDenied):
            raise Reply(403, "store error: access-denied")
        message = error.value
        token = message.split(": ", 1)[0] if ": " in message else ""
        status = {
            "quota-exceeded": 507,
            "invalid-argument": 400,
            "store-unavailable": 503,
        }.get(token, 500)
        raise Reply(status, f"store error: {message}")


def fetch(url):
    """GET url: its status and body, or 502 with the host's error code."""
    parts = urlsplit(url)
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    try:
        future = outgoing_handler.handle(request, None)
    except Err as err:
        return failed(err.value)
    result = future.get()
    while result is None:
        future.subscribe().block()
        result = future.get()
    if isinstance(result.value, Err):
        return failed(result.value.value)
    response = result.value.value
    return response.status(), read_body(response), "application/octet-stream"


def failed(code):
    return text(502, f"outgoing request failed: {type(code).__name__}")


def read_body(request):
    """The whole body of an incoming request or response."""
    body = request.consume()
    stream = body.stream()
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(65536))
        except Err as err:
            if isinstance(err.value, streams.StreamError_Closed):
                break
            raise Reply(400, "reading the request body failed")
    stream.__exit__(None, None, None)
    IncomingBody.finish(body)
    return b"".join(chunks)


def respond(response_out, status, body, kind):
    headers = [("content-type", kind.encode())] if kind else []
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = outgoing.write()
    for start in range(0, len(body), CHUNK):
        stream.blocking_write_and_flush(body[start:start + CHUNK])
    stream.__exit__(None, None, None)
    OutgoingBody.finish(outgoing, None)
