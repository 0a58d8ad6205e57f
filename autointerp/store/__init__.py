"""The SQLite store (one file, sqlite-utils, WAL). The only package that writes SQL.

    from autointerp.store import Store
    store = Store("store/autointerp.db")
"""

from .base import DEFAULT_STORE, SCHEMA_VERSION, content_hash, now, pack_f16, pack_i32, unpack_f16, unpack_i32
from .store import Store

__all__ = ["Store", "DEFAULT_STORE", "SCHEMA_VERSION", "content_hash", "now", "pack_f16", "unpack_f16", "pack_i32", "unpack_i32"]
