#!/usr/bin/env bash
# Soak: cubegate under steady, moderate load for a long time, once per
# upstream mode, watching for what only time shows (memory or descriptors
# that grow, an audit that stalls, errors around upstream connection turnover).
# Not run in CI.
#
# Usage: bench/soak.sh            (DURATION=1800: ~1 hour for both modes)
#        DURATION=90 WARMUP=30 bench/soak.sh   (a quick check of the script)
#
# For each mode in MODES, all on 127.0.0.1:
#   sandbox   cubegate in front of `cubegate sandbox` (TLS, HTTP/2, no delay);
#   nginx     cubegate in front of Debian's nginx (nginx-light, installed with
#             apt-get when missing) over TLS with HTTP/2, answering every
#             request with a fixed 200 {"id":"x"} and ending each connection
#             after KEEPALIVE_REQUESTS requests (GOAWAY), so the upstream
#             connection is recycled every few hundredths of a second;
# it starts cubegate (validation on, audit on with fsync, rate limits far
# above the offered load; nobody scrapes /metrics, as in an OTLP-only
# deployment), drives it with `cubegate-loadgen` open loop at RATE requests/s
# over CONNS keep-alive connections for DURATION seconds (a valid ~300-byte
# clients.update), and every SAMPLE seconds appends one row to
# $OUT_DIR/soak-<mode>.csv:
#   t_s            seconds since the load started (end of the interval)
#   unix_time      wall clock of the sample
#   rss_kib        cubegate's VmRSS (/proc/PID/status)
#   fds            cubegate's open file descriptors (/proc/PID/fd)
#   audit_bytes    size of cubegate's audit directory (du -sb)
#   requests       requests answered in the interval
#   errors         non-2xx answers and transport errors in the interval
#   p50_us p99_us max_us   latency of the interval's requests (from when each
#                  was due, so stalls count in full; see bench/loadgen.rs)
# Then bench/soak_plot.py draws $OUT_DIR/soak.png (RSS, fds, audit bytes and
# p99 over time, one line per mode) and prints one PASS/FAIL line per mode:
# PASS when the RSS slope after WARMUP seconds (least-squares line through
# those samples) is under MAX_SLOPE_MIB_PER_10MIN and there were no errors.
# The exit status is 0 only if every mode passed.
#
# Environment knobs (defaults):
#   DURATION=1800 SAMPLE=5 WARMUP=120 RATE=2000 CONNS=32 MODES="sandbox nginx"
#   KEEPALIVE_REQUESTS=100 (nginx mode: requests per upstream connection)
#   MAX_SLOPE_MIB_PER_10MIN=1
#   FSYNC=true (audit fsync)  LOG_FILTER="cubegate::access" (cubegate log lines
#            matching this are dropped before they reach the log file: one
#            access line per request would fill the disk; cubegate still
#            writes them)
#   OUT_DIR=bench/results/soak-<timestamp>  WORK_DIR=/tmp (audit logs, configs)
#   CARGO_TARGET_DIR=target  NO_BUILD=1 (use the binaries already built)
# Needs: cargo, curl, openssl, python3, taskset (util-linux); installs
# nginx-light and python3-matplotlib with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

case "${1:-}" in
-h | --help) sed -n '2,/^set -e/{/^#/p}' "$0"; exit 0 ;;
"") ;;
*) echo "bench/soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac
DURATION=${DURATION:-1800}
SAMPLE=${SAMPLE:-5}
WARMUP=${WARMUP:-120}
RATE=${RATE:-2000}
CONNS=${CONNS:-32}
MODES=${MODES:-"sandbox nginx"}
KEEPALIVE_REQUESTS=${KEEPALIVE_REQUESTS:-100}
MAX_SLOPE_MIB_PER_10MIN=${MAX_SLOPE_MIB_PER_10MIN:-1}
FSYNC=${FSYNC:-true}
LOG_FILTER=${LOG_FILTER-cubegate::access}
OUT_DIR=${OUT_DIR:-$ROOT/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"
for m in $MODES; do
    case "$m" in sandbox | nginx) ;; *) echo "bench/soak.sh: unknown mode $m" >&2; exit 2 ;; esac
done

log() { echo "[soak] $*" >&2; }

# ---- tools -----------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
    if need apt-get; then
        log "installing $*"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "bench/soak.sh: please install: $*" >&2; exit 1
    fi
}
need curl || apt_install curl
need openssl || apt_install openssl
need python3 || apt_install python3
need taskset || apt_install util-linux
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ " $MODES " == *" nginx "* ]] && [ ! -x "$NGINX" ]; then
    apt_install nginx-light; NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
# The plot needs matplotlib; Debian's package installs it for /usr/bin/python3,
# which may not be the first python3 on PATH (pyenv, venvs).
plot_python() {
    local p
    for p in python3 /usr/bin/python3; do
        "$p" -c 'import matplotlib' >/dev/null 2>&1 && { echo "$p"; return 0; }
    done
    return 1
}
PLOT_PY=$(plot_python) || { apt_install python3-matplotlib; PLOT_PY=$(plot_python); }

TD=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building cubegate and loadgen (release)"
    cargo build --release --quiet --bin cubegate --bin cubegate-loadgen
fi
CG=$TD/release/cubegate
LG=$TD/release/cubegate-loadgen

if [ "$(nproc)" -ge 2 ]; then
    SRV="taskset -c 0"; GEN="taskset -c 1"
    PINNING="servers (upstream, cubegate) on CPU 0, load generator on CPU 1 (taskset)"
else
    SRV=""; GEN=""; PINNING="no pinning (1 CPU)"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

W=$(mktemp -d "${WORK_DIR:-/tmp}/cubegate-soak.XXXXXX")
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { # url [curl args]
    local u=$1; shift
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$@" "$u" && return 0
        sleep 0.1
    done
    echo "bench/soak.sh: $u never answered" >&2; exit 1
}

KEY=test_soak0123456789abcdef
TOKEN=cgw_soak$(python3 -c 'import secrets;print(secrets.token_hex(24))')
TOKEN_SHA=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
printf '%s' "$KEY" >"$W/key"
python3 -c 'import secrets;print(secrets.token_hex(32))' >"$W/ckey"
python3 -c 'import secrets;print(secrets.token_hex(32))' >"$W/fkey"
# The body of every request: a valid ~300-byte clients.update (as bench/run.sh).
printf '%s' '{"type":"person","email":"john.doe@example.com","mobile":"+447700900123","telephone":"+442079460000","joinedDate":"2024-03-01","personDetails":{"firstName":"John","middleName":"Quincy","lastName":"Doe","dob":"1990-01-31","nationality":"GB","birthCountry":"GB","gender":"male","nationalIdentityNumber":"QQ123456C"}}' >"$W/body.json"

# ---- upstreams: each sets UP_URL, UP_CA and CID ------------------------------
start_sandbox() { # dir
    local d=$1 port
    port=$(free_port)
    $SRV "$CG" sandbox --listen 127.0.0.1:"$port" --ca-out "$d/ca.pem" >"$d/sandbox.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do [ -s "$d/ca.pem" ] && break; sleep 0.1; done
    wait_http "https://127.0.0.1:$port/__sandbox/health" --cacert "$d/ca.pem"
    CID=$(curl -s --cacert "$d/ca.pem" -X POST "https://127.0.0.1:$port/v1/clients" \
        -H "Authorization: $KEY" -H 'Content-Type: application/json' \
        -d '{"type":"person","email":"john.doe@example.com","personDetails":{"firstName":"John","lastName":"Doe"}}' |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
    UP_URL=https://127.0.0.1:$port/v1; UP_CA=$d/ca.pem
}
# A CA and a server certificate for 127.0.0.1 signed by it (webpki refuses a
# self-signed CA certificate used as the server's own).
make_certs() { # dir
    local d=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 \
        -subj "/CN=cubegate soak CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
        'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 3 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
}
start_nginx() { # dir
    local d=$1 port
    port=$(free_port)
    make_certs "$d"
    mkdir -p "$d/nginx"
    cat >"$d/nginx.conf" <<EOF
# One process (master_process off), so its pid is the one to stop.
daemon off;
master_process off;
worker_rlimit_nofile 65536;
pid $d/nginx/nginx.pid;
error_log $d/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/nginx/body;
    proxy_temp_path $d/nginx/proxy;
    fastcgi_temp_path $d/nginx/fastcgi;
    uwsgi_temp_path $d/nginx/uwsgi;
    scgi_temp_path $d/nginx/scgi;
    server {
        listen 127.0.0.1:$port ssl http2;
        ssl_certificate $d/server.pem;
        ssl_certificate_key $d/server.key;
        # Low on purpose: after this many requests nginx ends the HTTP/2
        # connection gracefully (GOAWAY), as load balancers and CDNs do.
        keepalive_requests $KEEPALIVE_REQUESTS;
        location / {
            default_type application/json;
            return 200 '{"id":"x"}';
        }
    }
}
EOF
    $SRV "$NGINX" -e "$d/nginx/error.log" -p "$d/nginx" -c "$d/nginx.conf" &
    PIDS+=("$!")
    wait_http "https://127.0.0.1:$port/v1/clients/x" --cacert "$d/ca.pem"
    CID=5f0c1e2d3b4a59687f8e9d0c
    UP_URL=https://127.0.0.1:$port/v1; UP_CA=$d/ca.pem
}

# ---- cubegate ----------------------------------------------------------------
start_cubegate() { # dir -> CG_PID, CG_PORT, AUDIT_DIR
    local d=$1
    CG_PORT=$(free_port); AUDIT_DIR=$d/audit
    cat >"$d/cubegate.toml" <<EOF
[listener]
address = "127.0.0.1:$CG_PORT"
max_connections = 8192
[admin]
address = "127.0.0.1:$(free_port)"
[upstream]
base_url = "$UP_URL"
ca_file = "$UP_CA"
webpki_roots = false
[[tenants]]
id = "soak"
test_key = "file:$W/key"
[[callers]]
id = "soak-caller"
token_sha256 = "$TOKEN_SHA"
tenant = "soak"
environment = "test"
operations = ["*"]
[validation]
enabled = true
[rate_limit]
# Far above the offered load: the limiter runs but never waits or refuses.
default_test = { per_second = 1000000.0, burst = 1000000 }
max_waiters = 100000
[audit]
enabled = true
fsync = $FSYNC
dir = "$AUDIT_DIR"
instance = "soak"
[audit_keys]
checkpoint_key = "file:$W/ckey"
fingerprint_key = "file:$W/fkey"
[telemetry]
log_format = "json"
log_level = "info"
EOF
    # `taskset` execs cubegate, so $! is cubegate's own pid; the filter runs
    # in a process substitution beside it.
    if [ -n "$LOG_FILTER" ]; then
        $SRV "$CG" serve --config "$d/cubegate.toml" \
            > >(grep --line-buffered -v -- "$LOG_FILTER" >"$d/cubegate.log") 2>&1 &
    else
        $SRV "$CG" serve --config "$d/cubegate.toml" >"$d/cubegate.log" 2>&1 &
    fi
    CG_PID=$!; PIDS+=("$CG_PID")
    wait_http "http://127.0.0.1:$CG_PORT/v1/clients/$CID" -H "Authorization: $TOKEN"
    local code
    code=$(curl -s -o "$d/check.txt" -w '%{http_code}' -X POST -H "Authorization: $TOKEN" \
        -H 'Content-Type: application/json' --data-binary @"$W/body.json" \
        "http://127.0.0.1:$CG_PORT/v1/clients/$CID")
    [ "$code" = 200 ] || { echo "bench/soak.sh: cubegate answered $code: $(cat "$d/check.txt")" >&2; exit 1; }
}

# Reads the loadgen's output: on each interval line, samples cubegate and
# appends a CSV row; the loadgen's closing summary line goes to $summary.
sample_loop() { # pid audit_dir csv summary mode
    local pid=$1 adir=$2 csv=$3 summary=$4 mode=$5 line rss fds ab re now
    re='"interval_end_s":([0-9.]+),"requests":([0-9]+),"errors":([0-9]+),"p50_us":([0-9]+),"p99_us":([0-9]+),"max_us":([0-9]+)'
    echo "t_s,unix_time,rss_kib,fds,audit_bytes,requests,errors,p50_us,p99_us,max_us" >"$csv"
    while IFS= read -r line; do
        if [[ $line =~ $re ]]; then
            now=$(date +%s.%N)
            # Empty when cubegate has exited: the row says so, the plot fails it.
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            fds=$( { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l)
            [ -n "$rss" ] || fds=""
            ab=$( { du -sb "$adir" 2>/dev/null || true; } | cut -f1)
            echo "${BASH_REMATCH[1]},${now:0:14},$rss,$fds,$ab,${BASH_REMATCH[2]},${BASH_REMATCH[3]},${BASH_REMATCH[4]},${BASH_REMATCH[5]},${BASH_REMATCH[6]}" >>"$csv"
            # A progress line about once a minute.
            if (( ${BASH_REMATCH[1]%.*} % 60 < ${SAMPLE%.*} )); then
                log "$mode t=${BASH_REMATCH[1]%.*}s rss=${rss:-gone}KiB fds=$fds audit=${ab}B p99=${BASH_REMATCH[5]}us errors=${BASH_REMATCH[3]}"
            fi
        else
            echo "$line" >>"$summary"
        fi
    done
}

run_mode() { # mode
    local mode=$1 d=$W/$1
    mkdir -p "$d"
    case "$mode" in
    sandbox) start_sandbox "$d" ;;
    nginx) start_nginx "$d" ;;
    esac
    start_cubegate "$d"
    log "$mode: cubegate pid $CG_PID on :$CG_PORT, upstream $UP_URL; $RATE req/s over $CONNS connections for ${DURATION}s"
    sync
    local csv=$OUT_DIR/soak-$mode.csv summary=$OUT_DIR/loadgen-$mode.json
    : >"$summary"
    $GEN "$LG" --url "http://127.0.0.1:$CG_PORT/v1/clients/$CID" --header "Authorization:$TOKEN" \
        --method POST --body-file "$W/body.json" --header 'Content-Type: application/json' \
        -c "$CONNS" --rate "$RATE" --duration "$DURATION" --warmup 0 \
        --report-every "$SAMPLE" --label "soak-$mode" |
        sample_loop "$CG_PID" "$AUDIT_DIR" "$csv" "$summary" "$mode" ||
        log "$mode: the load generator failed (see $summary)"
    kill -0 "$CG_PID" 2>/dev/null || log "$mode: cubegate exited during the soak"
    # Keep what explains a failure: the start of cubegate's log (access lines
    # filtered out) and how often each message occurred (a fault repeats
    # thousands of times over a long soak).
    head -n 1000 "$d/cubegate.log" >"$OUT_DIR/cubegate-$mode.log" 2>/dev/null || true
    python3 - "$d/cubegate.log" >"$OUT_DIR/cubegate-$mode.messages.txt" <<'PY' || true
import collections, json, sys
n = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        r = json.loads(line)
        n[f"{r.get('level', '?')} {r.get('message', '?')}: {r.get('error', '')}".rstrip(": ")] += 1
    except ValueError:
        n[line.strip()[:200]] += 1
for msg, c in n.most_common():
    print(f"{c:>9} {msg}")
PY
    [ ! -f "$d/nginx/error.log" ] || cp "$d/nginx/error.log" "$OUT_DIR/nginx-error.log"
    [ ! -f "$d/sandbox.log" ] || tail -n 1000 "$d/sandbox.log" >"$OUT_DIR/sandbox.log"
    stop_all
    rm -rf "$d"
}

START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "pinning: $PINNING; results in $OUT_DIR"
for mode in $MODES; do run_mode "$mode"; done

cat >"$OUT_DIR/machine.txt" <<EOF
date: $START
command: bench/soak.sh (DURATION=$DURATION SAMPLE=$SAMPLE WARMUP=$WARMUP RATE=$RATE CONNS=$CONNS MODES="$MODES" KEEPALIVE_REQUESTS=$KEEPALIVE_REQUESTS FSYNC=$FSYNC MAX_SLOPE_MIB_PER_10MIN=$MAX_SLOPE_MIB_PER_10MIN)
cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)
kernel: $(uname -r)
pinning: $PINNING
nginx: $("$NGINX" -v 2>&1 | cut -d/ -f2 || true)
cubegate: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
EOF
CSVS=()
for mode in $MODES; do CSVS+=("$OUT_DIR/soak-$mode.csv"); done
set +e
"$PLOT_PY" "$ROOT/bench/soak_plot.py" --warmup "$WARMUP" --duration "$DURATION" \
    --max-slope-mib-per-10min "$MAX_SLOPE_MIB_PER_10MIN" --out "$OUT_DIR/soak.png" "${CSVS[@]}" |
    tee "$OUT_DIR/verdict.txt"
rc=${PIPESTATUS[0]}
set -e
log "plot: $OUT_DIR/soak.png"
exit "$rc"
