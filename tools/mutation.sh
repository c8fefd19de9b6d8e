#!/usr/bin/env bash
# Mutation testing (mutmut) as evidence that the tests would notice a change in behaviour.
# Not part of the suite, and mutmut is not a dependency: this script installs it in a
# throwaway venv beside a copy of the committed tree.
#
# Usage: tools/mutation.sh [pure|store] [WORKDIR [MUTANT...]]
#   (WORKDIR defaults to a new /tmp/relay-mutation.*)
#   pure  (default) the pure modules (backoff, circuit, routing, tokens) against their unit tests,
#         one process per core.
#   store the queue's claim, ack, retry, dead, release, next-due and replay paths of
#         relay/store/sqlite.py and relay/store/postgres.py (the functions in STORE_PATHS
#         below; MUTANT globs instead, e.g. '*' for every function of both files) against the
#         store contract suite, which runs every test on both backends (a real SQLite file, a
#         real PostgreSQL). Uses RELAY_TEST_PG_DSN, or starts a throwaway cluster in
#         WORKDIR/pg for the run. One process: the tests share that server, and the run must
#         not crowd the machine. A test that hangs stops at 15 s (the slowest takes ~2 s):
#         many mutants of the group-commit writer hang rather than fail, and at the suite's
#         60 s each costs a minute (a whole-file run fell from ~2 mutants/s to ~1/min there).
#         pg_queries.py is not mutated: its SQL is module-level text (mutmut mutates inside
#         functions only), and a mangled string only shows that the statement breaks.
# Prints mutmut's summary; `cd WORKDIR/src && ../venv/bin/mutmut results` lists the survivors
# and `../venv/bin/mutmut show NAME` shows one. Runs at nice 19.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=pure
case "${1:-}" in pure | store) target=$1; shift ;; esac
work=${1:-$(mktemp -d /tmp/relay-mutation.XXXXXX)}
shift || true
mutants=("$@")
# The store functions a delivery goes through after ingest (mutmut names mutants after them).
STORE_PATHS=(
    "relay.store.sqlite.xǁSqliteStoreǁ"{claim,_finish,ack,retry,dead,release,ack_lease,release_leases,replay,next_due}"__mutmut_*"
    "relay.store.sqlite.x_"{_dead_matching,_history,_record_attempts}"__mutmut_*"
    "relay.store.postgres.xǁPostgresStoreǁ"{claim,_token,release,ack_lease,release_leases,replay,ack,_ack_loop,_flush_acks,_outcome,retry,dead,next_due}"__mutmut_*"
)
mkdir -p "$work/src"
git -C "$repo" archive HEAD | tar -x -C "$work/src"
if [ ! -x "$work/venv/bin/mutmut" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q -c "$repo/constraints.txt" "$work/src[test]"
    "$work/venv/bin/pip" install -q "mutmut>=3.3,<4"
fi
# Which modules, and the tests that must catch their mutants.
if [ "$target" = pure ]; then
    children=$(nproc)
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
else
    children=1
    if [ -z "${RELAY_TEST_PG_DSN:-}" ]; then
        mkdir -p "$work/pg"
        RELAY_TEST_PG_DSN=$(bash "$repo/.ci/postgres.sh" "$work/pg" | tail -n 1)
        export RELAY_TEST_PG_DSN
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
        as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
        trap 'as_pg "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null || true' EXIT
    fi
    cat >"$work/src/setup.cfg" <<'CFG'
[mutmut]
source_paths = relay/
only_mutate =
    relay/store/sqlite.py
    relay/store/postgres.py
also_copy =
    .ci/
pytest_add_cli_args_test_selection =
    tests/integration/test_store.py
    tests/integration/test_store_history.py
pytest_add_cli_args =
    -p
    no:cacheprovider
    -x
    -q
    --timeout=15
CFG
    [ ${#mutants[@]} -gt 0 ] || mutants=("${STORE_PATHS[@]}")
fi
cd "$work/src"
nice -n 19 "$work/venv/bin/mutmut" run --max-children "$children" "${mutants[@]}"
"$work/venv/bin/mutmut" results || true
echo "workdir: $work"
