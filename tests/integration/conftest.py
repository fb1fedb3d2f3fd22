"""Fixtures of the integration tests beyond tests/conftest.py: private Sentinel and Cluster sets."""

from tests.redis_topology import cluster_set, sentinel_set

__all__ = ["cluster_set", "sentinel_set"]
