#!/usr/bin/env bash
# Mutation testing (mutmut) of the pure modules against their fast unit tests, as evidence that
# the tests would notice a change in behaviour. Not part of the suite, and mutmut is not a
# dependency: this script installs it in a throwaway venv beside a copy of the committed tree.
#
# Usage: tools/mutation.sh [WORKDIR]        (WORKDIR defaults to a new /tmp/relay-mutation.*)
# Prints mutmut's summary; `cd WORKDIR/src && ../venv/bin/mutmut results` lists the survivors
# and `../venv/bin/mutmut show NAME` shows one. Runs at nice 19 on one process per core.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/relay-mutation.XXXXXX)}
mkdir -p "$work/src"
git -C "$repo" archive HEAD | tar -x -C "$work/src"
if [ ! -x "$work/venv/bin/mutmut" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q -c "$repo/constraints.txt" "$work/src[test]"
    "$work/venv/bin/pip" install -q "mutmut>=3.3,<4"
fi
# Which modules, and the tests that must catch their mutants.
cat >"$work/src/setup.cfg" <<'CFG'
[mutmut]
source_paths = relay/
only_mutate =
    relay/dispatch/backoff.py
    relay/dispatch/circuit.py
    relay/domain/routing.py
    relay/domain/tokens.py
pytest_add_cli_args_test_selection =
    tests/unit/test_backoff.py
    tests/unit/test_circuit.py
    tests/unit/test_routing.py
    tests/unit/test_tokens.py
pytest_add_cli_args =
    -p
    no:cacheprovider
    -x
    -q
CFG
cd "$work/src"
nice -n 19 "$work/venv/bin/mutmut" run --max-children "$(nproc)"
"$work/venv/bin/mutmut" results || true
echo "workdir: $work"
