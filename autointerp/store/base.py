"""The store's connection, schema, transactions and helpers shared by its domain mixins.

Only autointerp/store/ writes SQL. Stages get a Store and call its named methods.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import sqlite_utils

from ..core.keys import content_hash, pack_f16, pack_i32, unpack_f16, unpack_i32  # noqa: F401  (re-exported)
from ..errors import StoreError

SCHEMA_VERSION = 5
APP_ID = "autointerp"
DEFAULT_STORE = Path("store") / "autointerp.db"

def add_column(table: str, column: str, decl: str) -> Callable[[sqlite_utils.Database], None]:
    """A migration step adding a column to a table if the table exists (tables that do not yet are
    created by schema.sql, with the column) and lacks it."""
    def step(db: sqlite_utils.Database) -> None:
        if table in db.table_names() and column not in db[table].columns_dict:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    return step


# migrations[v] upgrades a store of schema version v to v+1 (run in one transaction). A step is an
# SQL statement or a function of the sqlite_utils Database (a conditional step, e.g. add_column).
MIGRATIONS: dict[int, list[str | Callable[[sqlite_utils.Database], None]]] = {
    # v2: every score carries its null control and margin, or the reason it is null; calibrations
    1: [*(f"ALTER TABLE scores ADD COLUMN {c}" for c in
          ("control REAL", "margin REAL", "margin_low REAL", "margin_high REAL", "reason TEXT"))],
    # v3: a circuit records what the edges outside it were patched to (corrupt | mean)
    2: [add_column("circuits", "ablation", "TEXT NOT NULL DEFAULT 'corrupt'")],
    # v4: attribution graphs (graphs, graph_nodes, graph_edges: new tables, made by schema.sql right
    # after the migrations run); an SAE name is unique per layer, not globally (a transcoder set's
    # layers share its name): the saes table is rebuilt with UNIQUE (name, layer), rows kept
    3: [lambda db: _saes_unique_per_layer(db)],
    # v5: one explanation store: a diff side's explanations and scores move from diff_explanations /
    # diff_scores into explanations (diff_id, side; model_id, unit, layer NULL) / scores; the
    # explanations table is rebuilt for that (its FTS index is rebuilt on open), the old tables dropped
    4: [lambda db: _one_explanation_store(db)],
}

# the columns of a score record that scores keeps, in the record's order (ScoreRecord, score/scorers.py)
SCORE_RECORD_COLS = ("kind", "value", "ci_low", "ci_high", "n", "scorer", "template_hash", "control", "margin",
                     "margin_low", "margin_high", "reason", "details")


def _table_ddl(table: str) -> str:
    """The column definitions of a table in schema.sql (the text between its parentheses)."""
    return schema_sql().split(f"CREATE TABLE IF NOT EXISTS {table} (", 1)[1].split("\n);", 1)[0]


def _saes_unique_per_layer(db: sqlite_utils.Database) -> None:
    if "saes" not in db.table_names():
        return
    cols = ", ".join(db["saes"].columns_dict)
    db.execute("ALTER TABLE saes RENAME TO saes_v3")
    db.execute("CREATE TABLE saes (" + _table_ddl("saes") + "\n)")
    db.execute(f"INSERT INTO saes ({cols}) SELECT {cols} FROM saes_v3")
    db.execute("DROP TABLE saes_v3")


def _one_explanation_store(db: sqlite_utils.Database) -> None:
    """v4 -> v5 (module doc of MIGRATIONS). Runs with foreign keys off (the 12-step table rebuild
    of SQLite's ALTER TABLE documentation); the caller checks them before it commits."""
    tables = set(db.table_names())
    if "explanations" in tables:
        for trigger in ("explanations_ai", "explanations_ad", "explanations_au"):
            db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        if "explanations_fts" in tables:
            db.execute("DROP TABLE explanations_fts")
        cols = ", ".join(db["explanations"].columns_dict)
        db.execute("CREATE TABLE explanations_v5 (" + _table_ddl("explanations") + "\n)")   # (a comment may end the last line)
        db.execute(f"INSERT INTO explanations_v5 ({cols}) SELECT {cols} FROM explanations")
        db.execute("DROP TABLE explanations")
        db.execute("ALTER TABLE explanations_v5 RENAME TO explanations")
    if "diff_explanations" not in tables:
        return
    ids: dict[int, int] = {}
    for r in db.query("select * from diff_explanations order by id"):
        db.execute("insert into explanations(key, diff_id, side, explainer, method, text, settings_json, created_at) "
                   "values (?,?,?,?,?,?,?,?) on conflict(key) do nothing",
                   [r["key"], r["diff_id"], r["side"], r["explainer"], r["method"], r["text"], r["settings_json"],
                    r["created_at"]])
        ids[r["id"]] = db.execute("select id from explanations where key = ?", [r["key"]]).fetchone()[0]
    cols = [c if c != "details" else "details_json" for c in SCORE_RECORD_COLS]
    for r in db.query("select * from diff_scores order by id"):
        if r["explanation_id"] not in ids:
            raise StoreError(f"diff score {r['key']!r} belongs to no diff explanation (id {r['explanation_id']}): "
                             "the store is damaged; it was not upgraded")
        rec = json.loads(r["record_json"])
        vals = [rec.get(c) if c != "details" else (None if rec.get(c) is None else json.dumps(rec[c], sort_keys=True))
                for c in SCORE_RECORD_COLS]
        db.execute(f"insert into scores(key, explanation_id, created_at, {', '.join(cols)}) "
                   f"values ({', '.join('?' * (3 + len(cols)))}) on conflict(key) do nothing",
                   [r["key"], ids[r["explanation_id"]], r["created_at"], *vals])
    db.execute("DROP TABLE diff_scores")
    db.execute("DROP TABLE diff_explanations")


def readonly_uri(path: str | Path) -> str:
    """The SQLite URI that opens `path` read-only. The path is percent-escaped, so a file named
    `a#b.db` or `a?b.db` is that file (unescaped, SQLite reads `#`/`?` as the URI's fragment or
    query: a different file, and mode=ro lost)."""
    return "file:" + quote(str(Path(path).resolve()), safe="/") + "?mode=ro"


def parse_schema_version(meta: dict, path: str | Path) -> int:
    """The store's schema version from its meta table, or StoreError with one clear line."""
    raw = meta.get("schema_version", 0)
    try:
        version = int(str(raw).strip())
    except ValueError:
        version = -1
    if version < 0 or str(raw).strip() not in (str(version), ""):
        raise StoreError(f"{path}: schema version {str(raw)[:40]!r} unreadable (not an autointerp store, or a damaged one)")
    return version


def decoded(row: dict, **json_cols: str) -> dict:
    """row with each column X_json named here (decoded(row, settings="{}")) replaced by X, its
    decoded JSON; the given JSON text stands in for a null or empty column."""
    for name, empty in json_cols.items():
        row[name] = json.loads(row.pop(f"{name}_json") or empty)
    return row


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def schema_sql() -> str:
    return resources.files("autointerp.store").joinpath("schema.sql").read_text()


class StoreBase:
    """Opens (creating idempotently) an autointerp SQLite store."""

    def __init__(self, path: str | Path = DEFAULT_STORE, *, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            if not create or readonly:
                raise StoreError(f"no store at {self.path} (run a command that writes, e.g. `autointerp mine`, first)")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StoreError(f"cannot create a store at {self.path}: a path above it is a file, not a folder") from None
            except OSError as e:
                raise StoreError(f"cannot create a store at {self.path}: {e.strerror or e}") from None
        try:
            if readonly:
                conn = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30, check_same_thread=False)
            else:
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            conn.isolation_level = None
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA busy_timeout = 30000")
            self._check_and_migrate(readonly)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not an autointerp store ({e})") from None

    # ---- schema -------------------------------------------------------------------
    def _check_and_migrate(self, readonly: bool) -> None:
        tables = set(self.db.table_names())
        if not tables and readonly:              # a read never turns an empty file into a store
            raise StoreError(f"{self.path} is not an autointerp store (it is empty)")
        if tables and "meta" not in tables:
            raise StoreError(f"{self.path} is not an autointerp store (it has other tables: {', '.join(sorted(tables)[:5])})")
        if "meta" in tables:
            meta = {r["key"]: r["value"] for r in self.db.query("select key, value from meta")}
            if meta.get("app") != APP_ID:
                raise StoreError(f"{self.path} is not an autointerp store")
            version = parse_schema_version(meta, self.path)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this autointerp ({SCHEMA_VERSION}); upgrade autointerp"
                )
            if readonly:
                return
            # foreign keys off while tables are rebuilt (a pragma that only works outside a
            # transaction); each migration checks the tables' keys before it commits
            self.db.execute("PRAGMA foreign_keys = OFF")
            try:
                while version < SCHEMA_VERSION:
                    with self.tx():
                        for stmt in MIGRATIONS.get(version, []):
                            stmt(self.db) if callable(stmt) else self.db.execute(stmt)
                        bad = [t for t in ("explanations", "scores") if t in self.db.table_names()
                               and self.db.execute(f"PRAGMA foreign_key_check({t})").fetchone()]
                        if bad:
                            raise StoreError(f"{self.path}: upgrading to schema version {version + 1} would break "
                                             f"the foreign keys of {', '.join(bad)}; nothing was changed")
                        version += 1
                        self._set_meta("schema_version", str(version))
            finally:
                self.db.execute("PRAGMA foreign_keys = ON")
        if readonly:
            return
        if self.db.journal_mode != "wal":
            self.db.enable_wal()
        # WAL + NORMAL: a commit is safe against a crash of the process (the WAL is synced at
        # checkpoints, not at every commit); a batch's many small commits (LLM calls, cache rows) stop
        # waiting on fsync
        self.db.execute("PRAGMA synchronous = NORMAL")
        # one transaction: a killed first open leaves no half-made store behind
        self.db.conn.executescript(
            "BEGIN IMMEDIATE;\n" + schema_sql() + "\n"
            f"INSERT OR IGNORE INTO meta(key, value) VALUES ('app', '{APP_ID}');\n"
            f"INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');\nCOMMIT;"
        )
        self._ensure_fts()

    def _ensure_fts(self) -> None:
        if "explanations_fts" not in self.db.table_names():
            self.db["explanations"].enable_fts(["text", "unit", "explainer"], create_triggers=True, tokenize="porter")

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("insert into meta(key, value) values (?, ?) on conflict(key) do update set value = excluded.value", [key, value])

    @property
    def schema_version(self) -> int:
        row = self.db.execute("select value from meta where key = 'schema_version'").fetchone()
        return parse_schema_version({"schema_version": row[0]}, self.path) if row else 0

    # ---- transactions -------------------------------------------------------------
    @contextlib.contextmanager
    def tx(self, immediate: bool = False) -> Iterator[sqlite_utils.Database]:
        """One transaction: everything inside commits together or not at all.

        immediate=True takes the write lock at the start (for read-then-write claims)."""
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield self.db
            return
        # IMMEDIATE always: a deferred transaction that reads first (e.g. sqlite-utils' insert looks up
        # the table's columns) cannot upgrade to a write after another connection committed (WAL:
        # SQLITE_BUSY at once, no busy wait), so concurrent writers (batch workers) would fail
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def query(self, sql: str, params: Any = None) -> list[dict]:
        return list(self.db.query(sql, params or []))

    def one(self, sql: str, params: Any = None, **json_cols: str) -> dict | None:
        """The first row of sql (or None), with its JSON columns decoded (see decoded)."""
        rows = self.query(sql, params)
        return decoded(rows[0], **json_cols) if rows else None

    def row_by_id(self, table: str, id_: str) -> dict | None:
        """The row of `table` whose id is id_; else, for 4+ characters, the most recently updated
        row whose id starts with them (a unique prefix, as git takes one); None if there is none."""
        rows = self.query(f"select * from {table} where id = ?", [id_])
        if not rows and len(id_) >= 4:
            rows = self.query(f"select * from {table} where id like ? order by updated_at desc", [id_ + "%"])
        return rows[0] if rows else None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- models -------------------------------------------------------------------
    def put_model(self, model_id: str, info: dict) -> None:
        """Record a subject model's sizes (idempotent). info: family, n_layers, d_model, n_heads,
        n_kv_heads, d_head, d_mlp, vocab_size."""
        cols = ["family", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "vocab_size"]
        row = {"id": model_id, **{c: info[c] for c in cols}, "created_at": now()}
        with self.tx():
            self.db["models"].insert(row, ignore=True)

    def get_model(self, model_id: str) -> dict | None:
        rows = self.query("select * from models where id = ?", [model_id])
        return rows[0] if rows else None

    def counts(self) -> dict[str, int]:
        return {t: self.db[t].count for t in self.db.table_names() if not t.startswith("explanations_fts")}

