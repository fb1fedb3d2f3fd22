"""Rate limits: shape every shop's calls to the platform's quotas across all replicas.

`rules` decides (pure): which buckets a call counts against, what a reply
teaches, whether a throttled call is tried once more. `shaper` does the I/O
on the request path. The buckets live in the store (`store/rates.py`).
"""
