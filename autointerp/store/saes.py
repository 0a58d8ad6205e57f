"""Store methods for the saes table: the SAEs (and transcoders) whose latents are units
L<layer>/F<i>@<name> (see store/store.py). Used by the pipeline and the faces; stages get an
SAE object from models/sae.py."""

from __future__ import annotations

import json

from ..errors import UsageError
from .base import now


class SAEsMixin:
    def put_sae(self, info: dict, model_id: str, cfg: dict) -> str:
        """Register an SAE (idempotent by content id) and return the name its unit ids use.

        info: id, name, hook, hook_out, architecture, d_in, d_sae, normalize_activations, path
        (models.sae.SAE.info()). A name already taken by a different SAE is refused."""
        with self.tx():
            row = self.get_sae(info["id"])
            if row is not None:
                if row["model_id"] != model_id:
                    raise UsageError(f"SAE {row['name']} ({info['id'][:12]}) is registered for model {row['model_id']}, "
                                     f"not {model_id}")
                if info.get("path") and info["path"] != row["path"]:
                    self.db.execute("update saes set path = ? where id = ?", [info["path"], info["id"]])
                return row["name"]
            from ..core.hooks import parse_hook

            layer = parse_hook(info["hook"])[0]
            other = [r for r in self.query("select path, layer, hook_out from saes where name = ?", [info["name"]])
                     if r["layer"] == layer or not r["hook_out"] or not info.get("hook_out")]   # a set: transcoders,
            #                                                                   one name, one per layer
            if other:
                raise UsageError(f"the store already has a different SAE named {info['name']!r} (from {other[0]['path']}): "
                                 "give this one another name (--sae-name)")

            self.db.execute(
                "insert into saes(id, name, model_id, hook, hook_out, layer, architecture, d_in, d_sae, normalisation, "
                "path, cfg_json, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [info["id"], info["name"], model_id, info["hook"], info.get("hook_out"), parse_hook(info["hook"])[0],
                 info["architecture"], info["d_in"], info["d_sae"], info.get("normalize_activations") or "none",
                 info.get("path"), json.dumps(cfg, sort_keys=True), now()])
            return info["name"]

    def sae_name_for(self, sae_id: str, name: str, layer: int | None = None) -> str:
        """The name this store gives (or will give) an SAE: its registered name when known, else
        `name`, refused when a different SAE holds it (at `layer`, when given: a transcoder set's
        layers share one name). Reads only (for faces, before any mining)."""
        row = self.query("select name from saes where id = ?", [sae_id])
        if row:
            return row[0]["name"]
        other = self.query("select path from saes where name = ? and (? is null or layer = ? or hook_out is null)",
                           [name, layer, layer])
        if other:
            raise UsageError(f"the store already has a different SAE named {name!r} (from {other[0]['path']}): "
                             "give this one another name (--sae-name)")
        return name

    def get_sae(self, id_or_name: str, layer: int | None = None) -> dict | None:
        """An SAE's row by content id (or a unique prefix of 8+ characters) or by name (at `layer`: a
        transcoder set shares one name across layers), else None."""
        rows = self.query("select * from saes where id = ? or (name = ? and (? is null or layer = ?)) "
                          "order by layer", [id_or_name, id_or_name, layer, layer])
        if not rows and len(id_or_name) >= 8:
            rows = self.query("select * from saes where id like ? || '%'", [id_or_name])
            if len(rows) > 1:
                raise UsageError(f"SAE id prefix {id_or_name!r} is ambiguous ({len(rows)} SAEs)")
        if not rows:
            return None
        r = dict(rows[0])
        r["cfg"] = json.loads(r.pop("cfg_json") or "{}")
        return r

    def saes(self, model_id: str | None = None) -> list[dict]:
        sql = "select id, name, model_id, hook, hook_out, layer, architecture, d_in, d_sae, normalisation, path, created_at from saes"
        return self.query(sql + (" where model_id = ?" if model_id else "") + " order by created_at, name",
                          [model_id] if model_id else [])
