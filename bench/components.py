#!/usr/bin/env python3
"""Memory held by components no tenant runs, and given back after
--component-grace.

    python3 bench/components.py RUNNER GRACE COMPONENT N WAIT

Starts RUNNER (--tenants 1, the admin API on 127.0.0.1:19095) with
--component-grace GRACE (`default`: the runner's own), uploads N variants
of COMPONENT (each with a custom section of its own, so each is a distinct
digest) through PUT /v1/components, and prints the runner's VmRSS (KiB) at
start, after the uploads, and WAIT seconds later, with the components held
then (GET /v1/components).
"""
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

runner, grace, component, count, wait = sys.argv[1:6]
ADMIN = "http://127.0.0.1:19095"
token = tempfile.NamedTemporaryFile("w", delete=False)
token.write("bench-token")
token.close()
args = [runner, "--tenants", "1", "--admin-token-file", token.name,
        "--listen", "127.0.0.1:18080", "--metrics-listen", "127.0.0.1:19095",
        "--log", "warn"]
if grace != "default":
    args += ["--component-grace", grace]
proc = subprocess.Popen(args)


def rss():
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


def call(method, path, body=None):
    request = urllib.request.Request(
        ADMIN + path, data=body, method=method,
        headers={"Authorization": "Bearer bench-token"})
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


try:
    for _ in range(300):
        try:
            urllib.request.urlopen(ADMIN + "/healthz")
            break
        except OSError:
            time.sleep(0.1)
    base = open(component, "rb").read()
    print("start", rss())
    for i in range(int(count)):
        tag = f"v{i}".encode()
        payload = bytes([len(tag)]) + tag
        status, answer = call("PUT", "/v1/components",
                              base + bytes([0, len(payload)]) + payload)
        assert status in (200, 201), answer
    print("after uploads", rss())
    time.sleep(float(wait))
    status, answer = call("GET", "/v1/components")
    print("later", rss(), "held", len(json.loads(answer)["components"]))
finally:
    proc.terminate()
    proc.wait()
