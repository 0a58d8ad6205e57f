"""The local web viewer (`autointerp serve`): read-only, stdlib http.server, server-side HTML."""

from .app import make_server, render, serve

__all__ = ["make_server", "render", "serve"]
