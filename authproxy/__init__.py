"""authproxy: an async reverse proxy that injects marketplace authentication."""

__version__ = "0.1.0"
