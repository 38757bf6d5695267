#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (redis-server from Debian, the official ComplyCube Python SDK from PyPI,
# Node.js and npm from Debian with the official Node SDK from npm into
# tests/sdk/node/, chattr from e2fsprogs), then runs every test. Tests start
# their own sandbox, gateways and redis-server processes on ephemeral loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if ! command -v node >/dev/null 2>&1; then need_apt+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then need_apt+=(npm); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c "import complycube" 2>/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "complycube==1.1.8"
# The Node SDK at the version pinned in tests/sdk/node/package.json, in a
# project-local node_modules (git-ignored) that tests/sdk/node_sdk_flow.js loads.
grep -qs '"version": "1.1.13"' tests/sdk/node/node_modules/@complycube/api/package.json \
  || (cd tests/sdk/node && npm ci --no-audit --no-fund --silent)

# Redis is started by the tests themselves (tests/redis_limiter.rs) on a free
# port, so they can also stop it mid-run; make sure the binary is there.
redis-server --version >/dev/null

cargo fmt --check
# The README's layout and every doc link match the tree.
python3 scripts/check-docs.py .
# pipefail: a failing test run fails the script although tee succeeds.
cargo test --all-targets --no-fail-fast 2>&1 | tee /tmp/cubegate-test.log
cargo clippy --all-targets --quiet -- -D warnings
