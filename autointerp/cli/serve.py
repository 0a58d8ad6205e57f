"""`autointerp serve`: the local, read-only web viewer (or Datasette over the store)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from ..errors import UsageError
from . import cli
from ..core.files import write_output
from .common import check_out_file, force_option, settings, store_option


def _find_datasette() -> str | None:
    """`datasette` next to this Python (a venv that is not activated) or on PATH."""
    here = Path(sys.executable).parent / "datasette"
    return str(here) if here.exists() else shutil.which("datasette")


def _run_datasette(store: Path, host: str, port: int) -> int:
    from ..serve import datasette as ds

    exe = _find_datasette()
    if exe is None:
        raise UsageError("--datasette needs Datasette: pip install datasette (or drop --datasette for the built-in viewer)")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        major = ds.datasette_major(out.stdout + out.stderr)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise UsageError(f"cannot run {exe} --version ({e})") from None
    meta, config = ds.split_for_version(ds.metadata_for(store), major)
    with tempfile.TemporaryDirectory(prefix="autointerp-datasette-") as tmp:
        mpath = Path(tmp) / "metadata.json"
        mpath.write_text(json.dumps(meta, indent=2))
        cpath = None
        if config is not None:
            cpath = Path(tmp) / "datasette.json"
            cpath.write_text(json.dumps(config, indent=2))
        click.echo(f"Datasette on http://{host}:{port}/{ds.url_name(ds.database_name(store))} (store {store}); Ctrl-C stops it",
                   err=True)
        try:
            return subprocess.run([exe, *ds.datasette_args(store, mpath, cpath, host, port)]).returncode
        except KeyboardInterrupt:
            return 0


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default is this machine only; the viewer has no authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--quiet", is_flag=True, help="Do not log requests.")
@click.option("--datasette", "use_datasette", is_flag=True,
              help="Open the store in Datasette instead (pip install datasette), with table labels and canned "
                   "queries for whatever the store file is called.")
@click.option("--datasette-metadata", "metadata_out", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              default=None, metavar="FILE",
              help="Write Datasette metadata keyed by this store's file name to FILE ('-': stdout) and exit; "
                   "then: datasette STORE -m FILE.")
@force_option
@click.option("--model", "model_spec", default=None, metavar="SPEC",
              help="Load this subject model for the test-your-text box on unit pages (opt-in; nothing is stored).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Device of --model [default: auto].")
@click.option("--llm", "llm_spec", default=None,
              help="With --model: also simulate the typed text from the unit's best explanation with this LLM.")
@store_option
def serve_cmd(host, port, quiet, use_datasette, metadata_out, force, model_spec, device, llm_spec, store_path):
    """A local web viewer of the store, read-only: search explanations, unit pages (explanations,
    scores, baseline, promoted tokens, records coloured by true or simulated activation), head
    pages (detector scores, attention) and dataset pages (patching heatmap, top components)."""
    from ..serve import serve
    from ..serve.app import check_store

    cfg = settings(store=store_path)
    store = cfg.store
    if metadata_out is not None:
        from ..serve.datasette import metadata_for

        check_out_file("--datasette-metadata", metadata_out, force=force)
        check_store(store)
        text = json.dumps(metadata_for(store), indent=2, ensure_ascii=False) + "\n"
        if metadata_out == "-":
            sys.stdout.write(text)
        else:
            try:
                write_output(metadata_out, text, force=force, option="--datasette-metadata")
            except OSError as e:
                raise UsageError(f"cannot write {metadata_out} ({e.strerror or e})") from None
            click.echo(f"wrote {metadata_out}: datasette {store} -m {metadata_out}", err=True)
        return
    if use_datasette:
        check_store(store)
        sys.exit(_run_datasette(Path(store), host, port))
    tester = None
    if llm_spec and not model_spec:
        raise UsageError("--llm simulates typed text: give --model SPEC too")
    if model_spec:
        from ..serve.tryit import TextTester
        from .common import load_subject

        check_store(store)                      # a bad store fails before the model loads
        llm = None
        if llm_spec:
            from ..llm import get_llm

            llm = get_llm(llm_spec, settings=cfg)
        tester = TextTester(load_subject(model_spec, device, None), llm)
    try:
        serve(store, host=host, port=port, quiet=quiet, tester=tester)
    except KeyboardInterrupt:
        click.echo("viewer stopped", err=True)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
