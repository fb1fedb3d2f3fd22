"""Local stand-ins for each marketplace: token endpoints and API endpoints that
check credentials, signatures, expiry and rotation the way the real platform
does (platforms.md). Used by `authproxy demo` and the tests.

Every sandbox also serves control routes under `/_sandbox/` (stats, expire,
fail, hang) so tests in other processes and curl users can drive it.
"""
