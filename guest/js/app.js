// An example tenant component in JavaScript, built with ComponentizeJS.
//
// It serves the same routes as the hostile guest's hello and key-value ones
// (see guest/README.md), and /fetch?url=URL (an outgoing request), through
// the standard interfaces only: wasi:http's incoming and outgoing handlers
// and wasi:keyvalue@0.2.0-draft.
// Nothing in it is specific to this runner.

import { open } from "wasi:keyvalue/store@0.2.0-draft";
import { increment } from "wasi:keyvalue/atomics@0.2.0-draft";
import { handle } from "wasi:http/outgoing-handler@0.2.10";
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingRequest,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.10";

// The handler is exported directly rather than through a `fetch` event
// listener: ComponentizeJS 0.22's engine cannot dispatch a second fetch
// event in one instance (StarlingMonkey issue #247), so a host that reuses
// instances (`max-instance-reuse`) would get no response from the second
// request. An exported `incomingHandler` serves any number of them.
export const incomingHandler = {
  handle(request, responseOut) {
    let reply;
    try {
      reply = route(request);
    } catch (error) {
      if (!(error instanceof Reply)) {
        throw error;
      }
      reply = text(error.status, error.message);
    } finally {
      // Handles are given back when the garbage collector gets to them,
      // which on a reused instance may be after a thousand requests: past
      // the host's limit on resources held at once.
      request[Symbol.dispose]();
    }
    respond(responseOut, reply);
  },
};

class Reply extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function route(request) {
  const url = new URL(request.pathWithQuery() ?? "/", "http://guest");
  const path = url.pathname;
  const method = request.method().tag.toUpperCase();
  if (path === "/hello") {
    expect(method, "GET");
    return text(200, "hello");
  }
  if (path === "/burn") {
    // A loop as long as asked: past the fuel budget the runner stops it.
    expect(method, "GET");
    const iters = intParam(url, "iters");
    let count = 0;
    for (let i = 0; i < iters; i++) {
      count++;
    }
    return text(200, String(count));
  }
  if (path === "/fetch") {
    // An outgoing request through wasi:http's outgoing handler; the host
    // decides whether it may go out.
    expect(method, "GET");
    return fetchUrl(url.searchParams.get("url") ?? "");
  }
  if (path.startsWith("/kv/")) {
    const key = decodeKey(path.slice("/kv/".length));
    if (method === "GET") {
      const value = store(() => bucket(url).get(key));
      if (value === undefined) {
        return text(404, "key not found");
      }
      return { status: 200, type: "application/octet-stream", body: value };
    }
    if (method === "PUT") {
      const value = readBody(request);
      store(() => bucket(url).set(key, value));
      return { status: 204, body: null };
    }
    throw new Reply(405, "method not allowed; allowed: GET, PUT");
  }
  if (path.startsWith("/incr/")) {
    const key = decodeKey(path.slice("/incr/".length));
    expect(method, "POST");
    const by = url.searchParams.has("by") ? intParam(url, "by") : 1;
    const value = store(() => increment(bucket(url), key, BigInt(by)));
    return text(200, String(value));
  }
  throw new Reply(404, "no such route");
}

const encoder = new TextEncoder();

function text(status, message) {
  return { status, type: "text/plain; charset=utf-8", body: encoder.encode(message) };
}

// The most `blocking-write-and-flush` takes at once.
const WRITE_CHUNK = 4096;

function respond(responseOut, { status, type, body }) {
  const headers = type === undefined ? [] : [["content-type", encoder.encode(type)]];
  const response = new OutgoingResponse(Fields.fromList(headers));
  response.setStatusCode(status);
  const outgoing = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  if (body !== null) {
    const stream = outgoing.write();
    for (let at = 0; at < body.length; at += WRITE_CHUNK) {
      stream.blockingWriteAndFlush(body.subarray(at, at + WRITE_CHUNK));
    }
    stream[Symbol.dispose]();
  }
  OutgoingBody.finish(outgoing, undefined);
}

// GET `target` and answer its status and body, or 502 with the host's
// error code (`outgoing request failed: HTTP-request-denied`).
function fetchUrl(target) {
  const url = new URL(target);
  const request = new OutgoingRequest(new Fields());
  request.setScheme({ tag: url.protocol === "https:" ? "HTTPS" : "HTTP" });
  request.setAuthority(url.host);
  request.setPathWithQuery(url.pathname + url.search);
  const failed = (code) => text(502, `outgoing request failed: ${code.tag}`);
  let future;
  try {
    future = handle(request, undefined);
  } catch (error) {
    if (error.payload === undefined) {
      throw error;
    }
    return failed(error.payload);
  }
  let result = future.get();
  while (result === undefined) {
    future.subscribe().block();
    result = future.get();
  }
  if (result.tag === "err") {
    throw new Error("the response was taken twice");
  }
  if (result.val.tag === "err") {
    return failed(result.val.val);
  }
  const response = result.val.val;
  return {
    status: response.status(),
    type: "application/octet-stream",
    body: readBody(response),
  };
}

// The whole body of an incoming request or response; the runner has
// already bounded its size.
function readBody(request) {
  const incoming = request.consume();
  const stream = incoming.stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (error) {
      if (error.payload?.tag === "closed") {
        break;
      }
      throw error;
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  stream[Symbol.dispose]();
  IncomingBody.finish(incoming);
  const value = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    value.set(chunk, at);
    at += chunk.length;
  }
  return value;
}

function expect(method, allowed) {
  if (method !== allowed) {
    throw new Reply(405, `method not allowed; allowed: ${allowed}`);
  }
}

function intParam(url, name) {
  const raw = url.searchParams.get(name);
  if (raw === null) {
    throw new Reply(400, `missing query parameter ${name}`);
  }
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) {
    throw new Reply(400, `invalid ${name}: ${JSON.stringify(raw)}`);
  }
  return value;
}

function decodeKey(raw) {
  let key;
  try {
    key = decodeURIComponent(raw);
  } catch {
    throw new Reply(400, "invalid key: not UTF-8");
  }
  if (key === "") {
    throw new Reply(400, "empty key");
  }
  return key;
}

function bucket(url) {
  return open(url.searchParams.get("bucket") ?? "");
}

// Runs a store call, turning its error into the status the Rust guests give.
function store(operation) {
  try {
    return operation();
  } catch (error) {
    const e = error.payload;
    if (e === undefined) {
      throw error;
    }
    if (e.tag === "no-such-store") {
      throw new Reply(404, "store error: no-such-store");
    }
    if (e.tag === "access-denied") {
      throw new Reply(403, "store error: access-denied");
    }
    const message = e.val;
    const token = message.includes(": ") ? message.split(": ", 1)[0] : "";
    const status =
      { "quota-exceeded": 507, "invalid-argument": 400, "store-unavailable": 503 }[token] ?? 500;
    throw new Reply(status, `store error: ${message}`);
  }
}
