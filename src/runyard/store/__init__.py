"""All durable state behind one interface (base.Store). Its algorithms are written once
(logic.py, run by sqlstore.SQLStore); each backend (sqlite.py, postgres.py) brings only its
connection, its named queries (*_sql.py), its errors and its notifications."""

from runyard.store.base import Store

__all__ = ["Store"]
