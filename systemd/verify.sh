#!/usr/bin/env bash
# Check systemd/relay.service with `systemd-analyze verify` (run by .ci/run after the tests, in their venv).
#
# verify exits 0 even on an unknown or misspelt directive (it only warns), so any output
# at all is a failure here. It also insists that ExecStart's binary exists: when
# /usr/local/bin/relay is absent, the relay of the active venv is linked there for the
# duration of the check and removed after.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

target=/usr/local/bin/relay
if [ ! -e "$target" ]; then
    relay_bin=$(command -v relay) || {
        echo "systemd/verify.sh: no relay command on PATH (activate the venv first)" >&2
        exit 1
    }
    ln -sfn "$relay_bin" "$target"
    trap 'rm -f "$target"' EXIT
fi

output=$(systemd-analyze verify systemd/relay.service 2>&1) || {
    echo "$output" >&2
    exit 1
}
if [ -n "$output" ]; then
    echo "systemd-analyze verify systemd/relay.service complained:" >&2
    echo "$output" >&2
    exit 1
fi
echo "systemd-analyze verify systemd/relay.service: ok"
