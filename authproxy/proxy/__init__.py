"""The HTTP edge: routing and headers (pure), the handler (I/O, streaming)."""
