"""Store methods for the tables of one stage (see store/store.py)."""

from __future__ import annotations


class TasksMixin:
    pass
