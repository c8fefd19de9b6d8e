#!/usr/bin/env bash
# Before/after in one run: the same benchmarks on two checkouts, alternating, ROUNDS times.
#   git worktree add --detach /tmp/relay-before OLD_COMMIT
#   (cd /tmp/relay-before && python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e .)
#   BEFORE=/tmp/relay-before AFTER=. ROUNDS=3 bash bench/compare.sh > compare.log
# Each line is a benchmark's JSON result; take the medians per side.
set -u
ROUNDS=${ROUNDS:-3}
BEFORE=${BEFORE:?a checkout with its .venv}
AFTER=${AFTER:-.}
for r in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    dir=$BEFORE; [ "$side" = after ] && dir=$AFTER
    echo "== round $r $side"
    (
      cd "$dir" || exit 1
      .venv/bin/python -m bench.run tracking --seconds 5 2>&1 | tail -1
      .venv/bin/python -m bench.run ingest --batch 100 --clients 16 --seconds 5 2>&1 | tail -1
      .venv/bin/python -m bench.run ingest --batch 1 --clients 16 --seconds 5 2>&1 | tail -1
      .venv/bin/python -m bench.run deliver --events 20000 --batch-size 1 --concurrency 16 2>&1 | tail -1
    )
  done
done
