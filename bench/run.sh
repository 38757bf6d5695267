#!/usr/bin/env bash
# cubegate vs nginx vs direct: a side-by-side load benchmark on loopback.
#
# Usage: bench/run.sh [--quick]
#
# One run, all on 127.0.0.1:
#   1. builds `cubegate` and the `cubegate-loadgen` bench tool in release mode;
#   2. starts the sandbox (fast mode: no artificial delay, TLS on) and creates
#      one client in it;
#   3. starts, side by side, against that one sandbox:
#        nginx        Debian's nginx (installed if missing) as a reverse proxy
#                     that replaces Authorization with the test key
#                     (proxy_pass https, CA-verified, keep-alive upstream pool);
#        cubegate     full: schema validation on, audit on with fsync (group
#                     commit), rate limits set far above the offered load;
#        cg-nofsync   the same with audit.fsync = false;
#        cg-noaudit   the same with [audit] enabled = false;
#        cg-noval     full, but [validation] enabled = false;
#        cg-norl      full, but [rate_limit] enabled = false;
#   4. measures each, and direct calls to the sandbox (the floor, TLS, test key),
#      with a valid ~300-byte clients.update body: closed loop at saturation
#      and open loop at fixed rates (latency corrected, see bench/loadgen.rs),
#      alternating the systems (A B C … A B C …) so machine drift hits each
#      the same;
#   5. peak RSS under 1,000 concurrent connections (closed loop, -c 1000);
#   6. prints one table (also written to $OUT_DIR/table.md with raw results).
#
# Pinning: with 2+ CPUs the load generator runs on CPU 1 and every server
# (sandbox, nginx, cubegate) on CPU 0 (`taskset`), so a proxy and the sandbox
# share one core: saturation numbers are "one core for proxy + upstream".
#
# Environment knobs (defaults; --quick shortens DURATION/ROUNDS):
#   DURATION=10 WARMUP=2 ROUNDS=2 RATES="500 2000" CONNS=50 SAT_CONNS=50 (also sizes
#            nginx's idle upstream pool: keepalive = max(64, SAT_CONNS))
#   C1000=1000 (0 skips the 1,000-connection RSS run) OUT_DIR=bench/results/<timestamp> CARGO_TARGET_DIR=target
#   VARIANTS="cg-nofsync cg-noaudit cg-noval cg-norl"  which variants to run beside the full cubegate;
#            also cg-h1 / cg-h2 (full, upstream HTTP/1.1 / HTTP/2 forced) and
#            cg-nowait (full, audit group_commit_wait_us = 0), cg-wait<µs> (another wait),
#            cg-baseline-nofsync (BASELINE_BIN with fsync off), cg-nofsync-nocp (fsync off,
#            checkpoints every 10^9 records / hour: what checkpoints cost),
#            cg-tmpfs (full, audit log on /dev/shm: fdatasync free there, so the disk's share shows),
#            cg-batchsched (full, audit writer_sched_batch = true: writer thread under SCHED_BATCH),
#            cg-jemalloc / cg-mimalloc / cg-tcmalloc (full, that malloc LD_PRELOADed
#            from Debian's package into ALLOC_BIN, a `cargo build --release
#            --no-default-features` binary copied aside: the default build's own
#            mimalloc cannot be replaced by a preload; ALLOC_ENV passes settings)
#   C1000_SYSTEMS="cubegate nginx"  which systems get the 1,000-connection RSS run
#   BASELINE_BIN=<older cubegate binary>  adds "cg-baseline" (full config) for before/after;
#            BASELINE_HTTP2=true|false sets its [upstream] http2 (binaries from before the switch: unset)
#   PERF_RECORD="<system> …"  also profiles these systems' first saturation run
#                         with `perf record -e cpu-clock` (needs linux-perf)
#   PERF_ARGS=<args>      extra `perf record` arguments, e.g. "--call-graph dwarf,16384"
#   SYSCALLS=1            also counts each server's system calls during the saturation runs
#                         (`perf stat -e raw_syscalls:sys_enter`, needs linux-perf) for the
#                         "syscalls/req" column; context switches per request are always counted
# Needs: cargo, curl, python3, taskset (util-linux); installs nginx-light
# with apt-get when nginx is missing. Takes ~8 minutes (--quick: ~2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for a in "$@"; do
    case "$a" in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -e/{/^#/p}' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}; ROUNDS=${ROUNDS:-1}
else
    DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-2}
fi
RATES=${RATES-"500 2000"}
if [ "${SYSCALLS:-0}" = 1 ] && ! command -v perf >/dev/null 2>&1; then
    echo "bench/run.sh: SYSCALLS=1 needs perf (Debian: linux-perf)" >&2; exit 2
fi
CONNS=${CONNS:-50}
SAT_CONNS=${SAT_CONNS:-50}
C1000=${C1000:-1000}
OUT_DIR=${OUT_DIR:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"

log() { echo "[bench] $*" >&2; }

# ---- tools -----------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
    if need apt-get; then
        log "installing $*"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "bench/run.sh: please install: $*" >&2; exit 1
    fi
}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { apt_install nginx-light; NGINX=$(command -v nginx || echo /usr/sbin/nginx); }
need curl || apt_install curl
need python3 || apt_install python3
need taskset || apt_install util-linux

log "building cubegate and loadgen (release)"
cargo build --release --quiet --bin cubegate --bin cubegate-loadgen
TD=${CARGO_TARGET_DIR:-$ROOT/target}
CG=$TD/release/cubegate
LG=$TD/release/cubegate-loadgen

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
    SRV="taskset -c 0"; GEN="taskset -c 1"
    PINNING="servers (sandbox, proxy) on CPU 0, load generator on CPU 1 (taskset)"
else
    SRV=""; GEN=""
    PINNING="no pinning (1 CPU): servers and load generator share it"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

W=$(mktemp -d /tmp/cubegate-bench.XXXXXX)
PIDS=()
TMPFS_AUDIT=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
    [ -z "$TMPFS_AUDIT" ] || rm -rf "$TMPFS_AUDIT"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { # url [curl args]
    local u=$1; shift
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$@" "$u" && return 0
        sleep 0.1
    done
    echo "bench/run.sh: $u never answered" >&2; exit 1
}

# ---- sandbox ---------------------------------------------------------------
KEY=test_bench0123456789abcdef
TOKEN=cgw_bench$(python3 -c 'import secrets;print(secrets.token_hex(24))')
P_SB=$(free_port)
$SRV "$CG" sandbox --listen 127.0.0.1:"$P_SB" --ca-out "$W/ca.pem" >"$W/sandbox.log" 2>&1 &
SB_PID=$!; PIDS+=("$SB_PID")
for _ in $(seq 1 100); do [ -s "$W/ca.pem" ] && break; sleep 0.1; done
wait_http "https://127.0.0.1:$P_SB/__sandbox/health" --cacert "$W/ca.pem"
CID=$(curl -s --cacert "$W/ca.pem" -X POST "https://127.0.0.1:$P_SB/v1/clients" \
    -H "Authorization: $KEY" -H 'Content-Type: application/json' \
    -d '{"type":"person","email":"john.doe@example.com","personDetails":{"firstName":"John","lastName":"Doe"}}' |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
# The body every system gets: a valid ~300-byte clients.update (cubegate
# strips `type` by policy; it equals the stored type, so upstream accepts it).
printf '%s' '{"type":"person","email":"john.doe@example.com","mobile":"+447700900123","telephone":"+442079460000","joinedDate":"2024-03-01","personDetails":{"firstName":"John","middleName":"Quincy","lastName":"Doe","dob":"1990-01-31","nationality":"GB","birthCountry":"GB","gender":"male","nationalIdentityNumber":"QQ123456C"}}' >"$W/body.json"
log "sandbox on :$P_SB, client $CID, body $(wc -c <"$W/body.json") bytes"

# ---- cubegate variants -----------------------------------------------------
printf '%s' "$KEY" >"$W/key"
python3 -c 'import secrets;print(secrets.token_hex(32))' >"$W/ckey"
python3 -c 'import secrets;print(secrets.token_hex(32))' >"$W/fkey"
TOKEN_SHA=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
declare -A PORT PID ADMIN
start_cubegate() { # name validation audit fsync [binary] [http2]
    local name=$1 val=$2 audit=$3 fsync=$4 bin=${5:-$CG} http2=${6:-} port
    port=$(free_port); ADMIN[$name]=$(free_port)
    cat >"$W/$name.toml" <<EOF
[listener]
address = "127.0.0.1:$port"
max_connections = 8192
[admin]
address = "127.0.0.1:${ADMIN[$name]}"
[upstream]
base_url = "https://127.0.0.1:$P_SB/v1"
ca_file = "ca.pem"
webpki_roots = false
${http2:+http2 = $http2}
[[tenants]]
id = "bench"
test_key = "file:key"
[[callers]]
id = "bench-caller"
token_sha256 = "$TOKEN_SHA"
tenant = "bench"
environment = "test"
operations = ["*"]
[validation]
enabled = $val
[rate_limit]
# Far above any offered load: the limiter runs but never waits or refuses.
default_test = { per_second = 1000000.0, burst = 1000000 }
max_waiters = 100000
[audit]
enabled = $audit
fsync = $fsync
dir = "audit-$name"
instance = "bench"
[audit_keys]
checkpoint_key = "file:ckey"
fingerprint_key = "file:fkey"
[telemetry]
log_format = "json"
log_level = "info"
EOF
    env ${CG_ENV:-} $SRV "$bin" serve --config "$W/$name.toml" >"$W/$name.log" 2>&1 &
    PID[$name]=$!; PIDS+=("$!"); PORT[$name]=$port
    wait_http "http://127.0.0.1:$port/v1/clients/$CID" -H "Authorization: $TOKEN"
}
alloc_lib() { # jemalloc|mimalloc|tcmalloc -> path of the shared library
    local pkg so
    case "$1" in
    jemalloc) pkg=libjemalloc2 so=libjemalloc.so.2 ;;
    mimalloc) pkg=libmimalloc2.0 so=libmimalloc.so.2 ;;
    tcmalloc) pkg=libtcmalloc-minimal4 so=libtcmalloc_minimal.so.4 ;;
    esac
    [ -e "/usr/lib/x86_64-linux-gnu/$so" ] || apt_install "$pkg"
    echo "/usr/lib/x86_64-linux-gnu/$so"
}
# VARIANTS narrows the cubegate variants for a quicker look (the full
# `cubegate` is always measured: the headline and the c1000 run need it).
VARIANTS=${VARIANTS-"cg-nofsync cg-noaudit cg-noval cg-norl"}
start_cubegate cubegate true true true
for v in $VARIANTS; do
    case "$v" in
    cg-nofsync) start_cubegate cg-nofsync true true false ;;
    cg-noaudit) start_cubegate cg-noaudit true false false ;;
    cg-nofsync-nocp) CG_ENV="CUBEGATE__AUDIT__CHECKPOINT_EVERY_RECORDS=1000000000 CUBEGATE__AUDIT__CHECKPOINT_EVERY_SECS=3600" start_cubegate cg-nofsync-nocp true true false ;;
    cg-noval) start_cubegate cg-noval false true true ;;
    # Full, but the rate limiter off ([rate_limit] enabled = false): what it costs.
    cg-norl) CG_ENV=CUBEGATE__RATE_LIMIT__ENABLED=false start_cubegate cg-norl true true true ;;
    cg-nowait) CG_ENV=CUBEGATE__AUDIT__GROUP_COMMIT_WAIT_US=0 start_cubegate cg-nowait true true true ;;
    # cg-wait<µs>: full, with another group-commit wait (cg-wait1000: 1 ms).
    cg-wait[0-9]*)
        [[ ${v#cg-wait} =~ ^[0-9]+$ ]] || { echo "bench/run.sh: $v: cg-wait takes microseconds, e.g. cg-wait1000" >&2; exit 2; }
        CG_ENV=CUBEGATE__AUDIT__GROUP_COMMIT_WAIT_US=${v#cg-wait} start_cubegate "$v" true true true ;;
    # Full, audit log on tmpfs (/dev/shm), where fdatasync returns at once:
    # what the audit costs on a disk whose flush is free (the code alone).
    cg-tmpfs)
        TMPFS_AUDIT=$(mktemp -d /dev/shm/cubegate-bench-audit.XXXXXX)
        CG_ENV=CUBEGATE__AUDIT__DIR=$TMPFS_AUDIT start_cubegate cg-tmpfs true true true ;;
    cg-batchsched) CG_ENV=CUBEGATE__AUDIT__WRITER_SCHED_BATCH=true start_cubegate cg-batchsched true true true ;;
    # The BASELINE_BIN binary without fsync (before/after of the no-fsync path).
    cg-baseline-nofsync) start_cubegate cg-baseline-nofsync true true false "${BASELINE_BIN:?cg-baseline-nofsync needs BASELINE_BIN}" "${BASELINE_HTTP2:-}" ;;
    cg-h1) start_cubegate cg-h1 true true true "$CG" false ;;
    cg-h2) start_cubegate cg-h2 true true true "$CG" true ;;
    # Full, with another malloc preloaded (Debian's packages, installed if
    # missing): what an allocator change would buy, before building one in.
    cg-jemalloc | cg-mimalloc | cg-tcmalloc)
        lib=$(alloc_lib "${v#cg-}")
        # The default build has mimalloc as its global allocator, which a
        # preload cannot replace: these need a glibc build (ALLOC_BIN).
        [ -n "${ALLOC_BIN:-}" ] || { echo "bench/run.sh: $v needs ALLOC_BIN=<a --no-default-features build>" >&2; exit 2; }
        CG_ENV="LD_PRELOAD=$lib ${ALLOC_ENV:-}" start_cubegate "$v" true true true "$ALLOC_BIN" ;;
    *) echo "bench/run.sh: unknown variant $v" >&2; exit 2 ;;
    esac
done
# BASELINE_BIN=/path/to/an/older/cubegate adds "cg-baseline": the full
# configuration on that binary, measured in the same alternation (before/after).
[ -n "${BASELINE_BIN:-}" ] && start_cubegate cg-baseline true true true "$BASELINE_BIN" "${BASELINE_HTTP2:-}"

# ---- nginx -----------------------------------------------------------------
P_NG=$(free_port)
# nginx's idle upstream pool must hold every concurrent request's connection:
# beyond it, nginx opens (and TLS-handshakes) a new upstream connection per
# request, which would measure handshakes rather than proxying.
NGINX_KEEPALIVE=$(( SAT_CONNS > 64 ? SAT_CONNS : 64 ))
mkdir -p "$W/nginx"
cat >"$W/nginx.conf" <<EOF
# One process (master_process off) so CPU and RSS are one pid's.
daemon off;
master_process off;
worker_rlimit_nofile 65536;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log $W/nginx/access.log;
    client_body_temp_path $W/nginx/body;
    proxy_temp_path $W/nginx/proxy;
    fastcgi_temp_path $W/nginx/fastcgi;
    uwsgi_temp_path $W/nginx/uwsgi;
    scgi_temp_path $W/nginx/scgi;
    upstream sandbox {
        server 127.0.0.1:$P_SB;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
    }
    # nginx closes a client connection after 1,000 requests by default; the
    # load generator would then count the request racing the close as an error.
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$P_NG;
        location / {
            proxy_pass https://sandbox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$P_SB;
            proxy_set_header Authorization "$KEY";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $W/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }
    }
}
EOF
$SRV "$NGINX" -e "$W/nginx/error.log" -p "$W/nginx" -c "$W/nginx.conf" &
PID[nginx]=$!; PIDS+=("$!"); PORT[nginx]=$P_NG
wait_http "http://127.0.0.1:$P_NG/v1/clients/$CID"
PID[direct]=$SB_PID

# shellcheck disable=SC2206
SYSTEMS=(direct nginx cubegate $VARIANTS)
[ -n "${BASELINE_BIN:-}" ] && SYSTEMS+=(cg-baseline)
# Every system must answer the benchmark request with 200 before we measure.
check_ok() { # system curl-args...
    local sys=$1 code; shift
    code=$(curl -s -o "$W/check-$sys.txt" -w '%{http_code}' -X POST "$@" \
        -H 'Content-Type: application/json' --data-binary @"$W/body.json")
    [ "$code" = 200 ] || { echo "bench/run.sh: $sys answered $code: $(cat "$W/check-$sys.txt")" >&2; exit 1; }
}
check_ok direct --cacert "$W/ca.pem" -H "Authorization: $KEY" "https://127.0.0.1:$P_SB/v1/clients/$CID"
check_ok nginx "http://127.0.0.1:$P_NG/v1/clients/$CID"
for s in "${SYSTEMS[@]:2}"; do
    check_ok "$s" -H "Authorization: $TOKEN" "http://127.0.0.1:${PORT[$s]}/v1/clients/$CID"
done
load_args() { # system -> loadgen target arguments
    case "$1" in
    direct) echo "--url https://127.0.0.1:$P_SB/v1/clients/$CID --ca $W/ca.pem --header Authorization:$KEY" ;;
    nginx) echo "--url http://127.0.0.1:$P_NG/v1/clients/$CID" ;;
    *) echo "--url http://127.0.0.1:${PORT[$1]}/v1/clients/$CID --header Authorization:$TOKEN" ;;
    esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Context switches of every live thread of a process (voluntary + involuntary).
# Threads that exit during a run take their switches with them (a slight
# undercount); a thread exiting between the glob and the read must not end
# the script (pipefail), hence the `|| true`.
ctx_switches() { { cat /proc/"$1"/task/*/status 2>/dev/null || true; } | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
RESULTS=$OUT_DIR/results.jsonl
: >"$RESULTS"

run_one() { # system mode(sat|RATE) round conns
    local sys=$1 mode=$2 round=$3 conns=$4 rate_arg="" c0 s0 c1 s1 x0 x1 line
    [ "$mode" != sat ] && rate_arg="--rate $mode"
    # Write back what earlier runs left dirty in the page cache (a no-fsync
    # audit variant writes tens of MB at saturation) before measuring, or the
    # kernel's writeback lands in the next system's run and inflates its tail.
    sync
    local perf_pid=""
    if [ "$mode" = sat ] && [ "$round" = 1 ] && [[ " ${PERF_RECORD:-} " == *" $sys "* ]]; then
        perf record -q -e cpu-clock -F 1999 ${PERF_ARGS:-} -p "${PID[$sys]}" -o "$OUT_DIR/perf-$sys.data" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    local stat_pid="" syscalls=None
    if [ "$mode" = sat ] && [ "${SYSCALLS:-0}" = 1 ]; then
        # Counts until stopped right after the load generator (same window as
        # the CPU ticks and the request count).
        perf stat -x, -e raw_syscalls:sys_enter -p "${PID[$sys]}" -o "$W/syscalls-$sys.csv" \
            >/dev/null 2>&1 &
        stat_pid=$!
    fi
    c0=$(cpu_ticks "${PID[$sys]}"); s0=$(cpu_ticks "$SB_PID"); x0=$(ctx_switches "${PID[$sys]}")
    # shellcheck disable=SC2046
    line=$($GEN "$LG" $(load_args "$sys") --method POST --body-file "$W/body.json" \
        --header 'Content-Type: application/json' -c "$conns" \
        --duration "$DURATION" --warmup "$WARMUP" $rate_arg --label "$sys")
    c1=$(cpu_ticks "${PID[$sys]}"); s1=$(cpu_ticks "$SB_PID"); x1=$(ctx_switches "${PID[$sys]}")
    if [ -n "$stat_pid" ]; then
        kill -INT "$stat_pid" 2>/dev/null || true
        wait "$stat_pid" || true
        syscalls=$(awk -F, '/raw_syscalls/ {print $1}' "$W/syscalls-$sys.csv" 2>/dev/null || true)
        [[ "$syscalls" =~ ^[0-9]+$ ]] || { syscalls=None; log "SYSCALLS=1: no system-call count for $sys (perf stat failed)"; }
    fi
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        perf report -i "$OUT_DIR/perf-$sys.data" --stdio --no-children --sort symbol -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -40 >"$OUT_DIR/perf-$sys.txt" || true
        log "profile of $sys at saturation: $OUT_DIR/perf-$sys.txt"
    fi
    echo "$line" | python3 -c "
import json,sys
r=json.load(sys.stdin)
r.update(system='$sys', load='$mode', round=$round, cpu_ticks=$c1-$c0, upstream_cpu_ticks=$s1-$s0,
         ctx_switches=$x1-$x0, syscalls=$syscalls)
print(json.dumps(r))" >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | python3 -c "import json,sys;r=json.load(sys.stdin);print(f\"round {r['round']} {r['system']:<11} {r['load']:>5}: {r['rps']:>8.0f} rps  p50 {r['p50_us']}us p99 {r['p99_us']}us p99.9 {r['p999_us']}us errors {r['errors']}\")")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "pinning: $PINNING; load average before: $LOAD_BEFORE"
for round in $(seq 1 "$ROUNDS"); do
    for mode in sat $RATES; do
        conns=$CONNS; [ "$mode" = sat ] && conns=$SAT_CONNS
        for sys in "${SYSTEMS[@]}"; do run_one "$sys" "$mode" "$round" "$conns"; done
    done
done
declare -A HWM
for sys in "${SYSTEMS[@]}"; do HWM[$sys]=$(hwm_kib "${PID[$sys]}"); done

# Peak RSS under 1,000 concurrent connections (closed loop), on the full
# cubegate and on nginx, after everything above (VmHWM never decreases).
[ "$C1000" = 0 ] && C1000_SYSTEMS="" || C1000_SYSTEMS=${C1000_SYSTEMS-"cubegate nginx"}
for sys in $C1000_SYSTEMS; do
    $GEN "$LG" $(load_args "$sys") --method POST --body-file "$W/body.json" \
        --header 'Content-Type: application/json' -c "$C1000" --duration 5 --warmup 1 \
        --label "$sys" | python3 -c "
import json,sys
r=json.load(sys.stdin); r.update(system='$sys', load='c$C1000', round=0, cpu_ticks=0, upstream_cpu_ticks=0)
print(json.dumps(r))" >>"$RESULTS"
    echo "{\"system\":\"$sys\",\"load\":\"hwm\",\"hwm_kib_before_c1000\":${HWM[$sys]},\"hwm_kib_after_c1000\":$(hwm_kib "${PID[$sys]}")}" >>"$RESULTS"
done
for sys in "${SYSTEMS[@]}"; do
    case " $C1000_SYSTEMS " in *" $sys "*) continue ;; esac
    echo "{\"system\":\"$sys\",\"load\":\"hwm\",\"hwm_kib_before_c1000\":${HWM[$sys]}}" >>"$RESULTS"
done
# The group-commit factor each gateway reached (records per write+fsync),
# from its /metrics; binaries without the metric are left out.
for sys in "${SYSTEMS[@]}"; do
    [ -n "${ADMIN[$sys]:-}" ] || continue
    curl -s "http://127.0.0.1:${ADMIN[$sys]}/metrics" | python3 -c "
import json,sys
v={}
for l in sys.stdin:
    for k in ('cubegate_audit_batch_records_sum','cubegate_audit_batch_records_count'):
        if l.startswith(k+' '): v[k]=float(l.split()[1])
if len(v)==2: print(json.dumps(dict(system='$sys',load='audit',records=v['cubegate_audit_batch_records_sum'],batches=v['cubegate_audit_batch_records_count'])))
" >>"$RESULTS" || true
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

cat >"$OUT_DIR/machine.txt" <<EOF
date: $START
command: bench/run.sh $* (DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS RATES="$RATES" CONNS=$CONNS SAT_CONNS=$SAT_CONNS C1000=$C1000)
cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $NCPU
kernel: $(uname -r)
pinning: $PINNING
load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER
nginx: $("$NGINX" -v 2>&1 | cut -d/ -f2)
cubegate: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
EOF
python3 "$ROOT/bench/table.py" "$RESULTS" "$OUT_DIR/machine.txt" "$(getconf CLK_TCK)" | tee "$OUT_DIR/table.md"
log "raw results: $RESULTS"
