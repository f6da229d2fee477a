"""Token buckets per client, for the rate limit and the limit on failed API keys.

By hand, not a library: ``limits`` (the maintained one behind slowapi) has fixed and
sliding windows but no token bucket, and none reports when the next request will pass,
which ``Retry-After`` needs. At most ``max_clients`` buckets are kept, least recently
seen dropped first, so a flood of spoofed clients cannot grow memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000, clock=time.monotonic):
        self.rate, self.burst, self.max_clients, self.clock = rate_per_s, burst, max_clients, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """Take one token for ``client``: 0 if it may go now, else the seconds until it may."""
        now = self.clock()
        tokens, at = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait
