"""The chat front's record of streams told to ask again (services/chat.py AskedBack): bounded
however many are told, the oldest forgotten first, each taken once."""

from __future__ import annotations

from runyard.services.chat import AskedBack


def test_the_record_is_bounded_oldest_first_and_each_entry_is_taken_once() -> None:
    asked = AskedBack(most=3)
    for i in range(5):
        asked.told(f"d{i}", f"run{i}", until=100.0 + i)
    assert asked.taken("d0") is None and asked.taken("d1") is None  # forgotten, the oldest
    assert asked.taken("d4") == ("run4", 104.0)
    assert asked.taken("d4") is None  # once
    asked.told("d2", "again", until=200.0)  # told again: the newest, not forgotten next
    asked.told("d5", "run5", until=105.0)
    asked.told("d6", "run6", until=106.0)
    assert asked.taken("d3") is None and asked.taken("d2") == ("again", 200.0)
