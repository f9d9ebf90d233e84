#!/usr/bin/env python3
"""A bounded soak through Envoy 1.40 and cognito-authz: three fixed-rate streams at once
(h2load, HTTP/1.1) for SOAK_SECONDS (default 180): a valid token (expect 2xx), a token whose
signature does not verify (expect 401) and no token (expect 401). Reports every stream's status
counts, the unexpected ones (must be zero), and cognito-authz's RSS at start, middle and end
(must be flat). SOAK_RPS sets each stream's rate (default 200 requests a second).
"""
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's process and config helpers)

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
RPS = int(os.environ.get("SOAK_RPS", "200"))


def h2load(port, header, results, key):
    args = ["h2load", "--h1", "-c", "4", "--rps", str(max(RPS // 4, 1)), "-D", str(SECONDS), "-m", "1"]
    if header:
        args += ["-H", header]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}/api/soak"], capture_output=True, text=True).stdout
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    results[key] = {
        "2xx": int(codes.group(1)), "3xx": int(codes.group(2)), "4xx": int(codes.group(3)), "5xx": int(codes.group(4)),
        "done": int(done.group(3)), "errored": int(done.group(6)),
    }


def main():
    run.WORK.mkdir(parents=True, exist_ok=True)
    tokens = run.WORK / "tokens"
    if not (tokens / "valid-1.txt").exists():
        subprocess.run([str(run.RELEASE / "mint"), str(tokens), "10"], check=True)
    pool = __import__("json").loads((tokens / "pool.json").read_text())
    valid = (tokens / "valid-1.txt").read_text().strip()
    invalid = (tokens / "invalid.txt").read_text().strip()
    jwks_port = run.free_port()
    run.start("soak-jwks", [str(run.VENV / "bin" / "python"), "-m", "http.server", str(jwks_port), "--bind",
                            "127.0.0.1", "--directory", str(tokens)])
    run.wait_tcp(jwks_port)
    authz_port, admin = run.free_port(), run.free_port()
    authz = run.start("soak-authz", [str(run.RELEASE / "cognito-authz"), "serve"], {
        "AWS_COGNITO_USER_POOL_ID": pool["pool_id"], "AWS_COGNITO_USER_POOL_CLIENT_ID": pool["client_id"],
        "COGNITO_JWKS_URI": f"http://127.0.0.1:{jwks_port}/jwks.json", "AUTHZ_GRPC_ADDR": f"127.0.0.1:{authz_port}",
        "AUTHZ_ADMIN_ADDR": f"127.0.0.1:{admin}", "RUST_LOG": "warn",
    })
    run.wait_http(f"http://127.0.0.1:{admin}/readyz")
    path, port, envoy_admin = run.envoy_config("soak", run.EXT_AUTHZ, run.tcp_address(authz_port))
    run.start("soak-envoy", [str(run.VENV / "bin" / "envoy"), "-c", str(path), "--concurrency", "1",
                             "--disable-hot-restart", "--log-level", "error"])
    run.wait_http(f"http://127.0.0.1:{envoy_admin}/ready")

    rss = [("start", run.rss_kb(authz.pid))]
    results = {}
    streams = [("valid token", f"authorization: Bearer {valid}", "2xx"),
               ("bad signature", f"authorization: Bearer {invalid}", "4xx"),
               ("no token", None, "4xx")]
    threads = [threading.Thread(target=h2load, args=(port, header, results, name)) for name, header, _ in streams]
    for t in threads:
        t.start()
    time.sleep(SECONDS / 2)
    rss.append(("middle", run.rss_kb(authz.pid)))
    for t in threads:
        t.join()
    rss.append(("end", run.rss_kb(authz.pid)))

    unexpected = 0
    print(f"Soak: {SECONDS} s, {RPS} requests/s per stream, 3 streams, through Envoy to cognito-authz")
    print("| stream | done | 2xx | 4xx | 5xx | errored | expected | unexpected |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _, expected in streams:
        r = results[name]
        bad = r["done"] - r[expected] + r["errored"]
        unexpected += bad
        print(f"| {name} | {r['done']} | {r['2xx']} | {r['4xx']} | {r['5xx']} | {r['errored']} | {expected} | {bad} |")
    print("cognito-authz RSS: " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in rss))
    grew = (rss[-1][1] - rss[1][1]) / 1024
    print(f"unexpected statuses: {unexpected}; RSS from middle to end: {grew:+.1f} MB")
    return 1 if unexpected or grew > 5 else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in run.PROCS:
            run.stop(p)
