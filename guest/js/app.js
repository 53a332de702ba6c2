// An example tenant component in JavaScript, built with ComponentizeJS.
//
// It serves the same routes as the hostile guest's hello and key-value ones
// (see guest/README.md) through the standard interfaces only: a fetch-event
// handler (wasi:http's incoming handler) and wasi:keyvalue@0.2.0-draft.
// Nothing in it is specific to this runner.

import { open } from "wasi:keyvalue/store@0.2.0-draft";
import { increment } from "wasi:keyvalue/atomics@0.2.0-draft";

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  try {
    return await route(request);
  } catch (error) {
    if (error instanceof Reply) {
      return text(error.status, error.message);
    }
    throw error;
  }
}

class Reply extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function route(request) {
  const url = new URL(request.url);
  const path = url.pathname;
  const method = request.method;
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
  if (path.startsWith("/kv/")) {
    const key = decodeKey(path.slice("/kv/".length));
    if (method === "GET") {
      const value = store(() => bucket(url).get(key));
      if (value === undefined) {
        return text(404, "key not found");
      }
      return new Response(value, {
        status: 200,
        headers: { "content-type": "application/octet-stream" },
      });
    }
    if (method === "PUT") {
      const value = new Uint8Array(await request.arrayBuffer());
      store(() => bucket(url).set(key, value));
      return new Response(null, { status: 204 });
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

function text(status, message) {
  return new Response(message, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
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
