"""All durable state behind one interface, with one implementation per database."""

from runyard.store.base import Store

__all__ = ["Store"]
