"""`autointerp serve`: the local, read-only web viewer."""

from __future__ import annotations

import click

from ..errors import UsageError
from . import cli
from .common import settings, store_option


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default is this machine only; the viewer has no authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--quiet", is_flag=True, help="Do not log requests.")
@store_option
def serve_cmd(host, port, quiet, store_path):
    """A local web viewer of the store, read-only: search explanations, unit pages (explanations,
    scores, baseline, promoted tokens, records coloured by true or simulated activation), head
    pages (detector scores, attention) and dataset pages (patching heatmap, top components)."""
    from ..serve import serve

    try:
        serve(settings(store=store_path).store, host=host, port=port, quiet=quiet)
    except KeyboardInterrupt:
        click.echo("viewer stopped", err=True)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
