"""Datasette over an autointerp store, whatever the store file is called.

Datasette keys per-database metadata (table labels, descriptions, canned queries) by the database
name, which it takes from the file's stem (`runs/gpt2.db` is database `gpt2`), so a metadata file
keyed `autointerp` only applies to `autointerp.db`. The template here (datasette_metadata.json,
shipped with the package) is database-agnostic: one `database` block. `metadata_for(store)`
keys it by the store's stem at run time; `autointerp serve --datasette` writes it to a temporary
file and starts Datasette with it, and `autointerp serve --datasette-metadata FILE` writes it out.

Datasette 0.x reads canned queries from the metadata (`-m`); 1.0 moved them to the configuration
file (`-c`), so for 1.x the queries are written there instead (split_for_version).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

TEMPLATE = Path(__file__).parent / "datasette_metadata.json"


def database_name(store_path: str | Path) -> str:
    """The name Datasette gives a database file: its stem (`store/my run.db` -> `my run`)."""
    return Path(store_path).stem


def url_name(name: str) -> str:
    """A database name as Datasette spells it in URLs (0.62+ "tilde encoding": every character
    but letters, digits, '_' and '-' as ~XX; 'my run 2' -> 'my~20run~202')."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else
                   "".join(f"~{b:02X}" for b in c.encode("utf-8")) for c in name)


def template() -> dict:
    return json.loads(TEMPLATE.read_text(encoding="utf-8"))


def metadata_for(store_path: str | Path) -> dict:
    """Datasette metadata (0.x form: tables and canned queries) keyed by this store's database name."""
    t = template()
    name = database_name(store_path)
    return {"title": t["title"],
            "description": f"{t['description']} Open with: autointerp serve --datasette --store {store_path}",
            "databases": {name: copy.deepcopy(t["database"])}}


def datasette_major(version_output: str) -> int:
    """The major version from `datasette --version` ('datasette, version 0.65.1' -> 0)."""
    m = re.search(r"version\s+(\d+)\.", version_output)
    if not m:
        raise ValueError(f"cannot read a Datasette version from {version_output.strip()[:80]!r}")
    return int(m.group(1))


def split_for_version(meta: dict, major: int) -> tuple[dict, dict | None]:
    """(metadata, config) for Datasette `major`: 0.x takes everything as metadata (config None);
    1.x takes the canned queries in the configuration file and the rest as metadata."""
    if major < 1:
        return meta, None
    meta = copy.deepcopy(meta)
    config: dict = {"databases": {}}
    for name, db in meta["databases"].items():
        queries = db.pop("queries", None)
        if queries:
            config["databases"][name] = {"queries": queries}
    return meta, config


def datasette_args(store_path: str | Path, metadata_path: Path, config_path: Path | None,
                   host: str, port: int) -> list[str]:
    """The `datasette serve` arguments (after the executable) for a store."""
    args = ["serve", str(store_path), "-m", str(metadata_path), "--host", host, "--port", str(port)]
    if config_path is not None:
        args += ["-c", str(config_path)]
    return args
