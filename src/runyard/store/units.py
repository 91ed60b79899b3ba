"""A unit of work: a generator that yields steps (run a named query, notify other servers) and
is sent each query's result, and the two drivers that run one (blocking on SQLite's database
thread, awaited on PostgreSQL's event loop) — so one algorithm serves both backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, TypeVar, cast

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """Run the backend's query `name` (a constant of its *_sql module) and send back its
    `result`: the first row, all rows, the row count, nothing, or nothing after running it
    once per row of `args` (many)."""

    name: str
    args: Any  # positional parameters, a mapping of named ones, or the rows of `many`
    result: Literal["one", "all", "count", "none", "many"] = "none"


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell the other servers, at commit, on `channel`."""

    channel: str
    payload: str = ""


Step = Query | Notify
Unit = Generator[Step, Any, T]
# What a store runs: the maker of a unit (logic.py's function and its arguments, a partial),
# not the unit, so that a group commit that had to undo a transaction can run it again.
Make = Callable[[], Unit[T]]


def name_of(make: Make[Any]) -> str:
    """The Store method a unit implements (logic.py names its functions after them)."""
    return str(getattr(getattr(make, "func", make), "__name__", "store"))


def one(name: str, *args: Any) -> Query:
    return Query(name, args, "one")


def rows(name: str, *args: Any) -> Query:
    return Query(name, args, "all")


def count(name: str, *args: Any) -> Query:
    return Query(name, args, "count")


def execute(name: str, *args: Any) -> Query:
    return Query(name, args)


def bind(queries: ModuleType, query: Query) -> tuple[str | None, Any]:
    """The SQL and parameters of `query` in a dialect. A constant is the SQL itself, a function
    builds it from the arguments (filters), None means the dialect needs no such step."""
    sql = getattr(queries, query.name)
    if callable(sql):
        return cast(tuple[str, Any], sql(*query.args))
    return sql, query.args


def drive(unit: Unit[T], run: Callable[[Step], Any]) -> T:
    """Run a unit to its end with a blocking `run` of each step."""
    result: Any = None
    try:
        while True:
            result = run(unit.send(result))
    except StopIteration as done:
        return cast(T, done.value)


async def drive_async(unit: Unit[T], run: Callable[[Step], Awaitable[Any]]) -> T:
    """Run a unit to its end with an awaited `run` of each step."""
    result: Any = None
    try:
        while True:
            result = await run(unit.send(result))
    except StopIteration as done:
        return cast(T, done.value)
