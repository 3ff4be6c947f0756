"""Several ``alcove serve`` instances on one Redis (``ALCOVE_REDIS_URL``); see docs/operations.md, "Several
instances". Without ``ALCOVE_REDIS_URL`` the Redis client is never imported: one process, in-memory state.
"""
