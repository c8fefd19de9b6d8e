"""Chaos, short form: mixed load, a receiver failing a third of requests at random, and the
real daemon killed with SIGKILL at random moments, 8 times. Every 2xx must be delivered.

The long form is `python -m bench.chaos --rounds 50`.
"""

from __future__ import annotations

import random

from bench.chaos import Campaign

ROUNDS = 8
# The daemon sends at most concurrency × batch_size (8 × 10) events at once; only those, and
# those answered 2xx whose ack was not yet committed, can be delivered twice after a kill.
IN_FLIGHT = 8 * 10


async def test_chaos_every_acknowledged_event_is_delivered(tmp_path):
    seed = random.randrange(2**32)
    campaign = Campaign(tmp_path, rounds=ROUNDS, seed=seed, max_life_s=1.5, drain_timeout_s=30)
    result = await campaign.run()
    print(f"chaos seed={seed}: {result}")
    assert result["kills"] == ROUNDS
    assert result["api_events"] > 0 and result["pixel_hits"] > 0 and result["clicks"] > 0
    assert result["receiver_failed"] > 0
    assert result["missing"] == 0, f"seed {seed}: lost {result['missing_sample']}"
    assert result["duplicates"] <= ROUNDS * 2 * IN_FLIGHT, result
    assert result["unacked_but_delivered"] <= ROUNDS * 64, result  # only requests cut by a kill
