"""The `autointerp` command. One module per use; each command is a thin wrapper around one
Python API function (the same verb), like sqlite-utils.

Conventions for every command:
  --store PATH   the SQLite store (default store/autointerp.db, or $AUTOINTERP_STORE)
  --model SPEC   subject model (packaged alias, .gguf file, local dir or hub id), with --device/--dtype
  --json         one JSON document on stdout and nothing else there
  exit codes     0 ok, 1 error, 2 bad usage/input, 3 budget reached; errors are one line on stderr
                 (a traceback only with `autointerp --debug ...`)
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import AutointerpError
from .common import HardenedGroup, harden_command, quiet_library_warnings

# command modules register themselves on `cli` when imported; missing modules are skipped so the
# CLI lists exactly the commands that exist.
COMMAND_MODULES = ["models", "llm", "mine", "explain", "tasks", "patching", "batch", "query", "serve", "validate", "investigate", "calibrate", "circuit", "diff", "sae", "graph"]


@click.group(cls=HardenedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="autointerp")
def cli(debug: bool) -> None:
    """autointerp: explain the units of a transformer LM with an LLM, and find the circuits of a task.

    \b
    Units are named L5/N131 (MLP neuron), L9/H9 (attention head) and L6/F12@sae (SAE latent); hook points
    blocks.{L}.resid_pre, blocks.{L}.attn.z, blocks.{L}.mlp.post, ... (TransformerLens' spellings such as
    blocks.{L}.attn.hook_z are accepted where they name the same tensor).
    """
    # --debug is read by main() from argv (it must hold before click parses anything); nothing is kept


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    harden_command(cli)         # options added to a group after it was registered (idempotent)


def main(argv: list[str] | None = None) -> None:
    quiet_library_warnings()
    _load_commands()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="autointerp", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except AutointerpError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted (work already stored is kept)", err=True)
        sys.exit(130)
    except Exception as e:  # an unexpected failure still gets one line unless --debug
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (rerun with --debug for a traceback)", err=True)
        sys.exit(1)
