"""Many rows in one statement: `INSERT ... SELECT` built from one model instance.

The elements of an array differ in a few columns (name, index, environment) and share every other
value. A model instance per element costs more than the database's whole insert, so the statement
takes the shared values from one instance, prepared for the database as the ORM prepares them
(defaults, JSON, time zones), and the varying ones from SQL expressions over a row source the
database generates. Only builds SQL; `jobs.services` runs it. PostgreSQL and SQLite (3.35+: RETURNING).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model

# The series of element indices, `element(i)`: a recursive query, which PostgreSQL and SQLite both run.
_ELEMENTS = (
    "WITH RECURSIVE element(i) AS ("
    "SELECT CAST(%s AS INTEGER) UNION ALL SELECT CAST(i + %s AS INTEGER) FROM element WHERE i + %s <= %s)"
)

# An element's environment: the array's, with ARRAY_INDEX set to the element's index.
_ENV_WITH_INDEX = {
    "postgresql": "({env} || jsonb_build_object('ARRAY_INDEX', CAST(element.i AS TEXT)))",
    "sqlite": "json_set({env}, '$.ARRAY_INDEX', CAST(element.i AS TEXT))",
}


@dataclass(frozen=True)
class Sql:
    """A fragment of SQL and the parameters of its placeholders, in order."""

    text: str
    params: tuple[Any, ...] = ()


def elements(indices: Sequence[int]) -> Sql:
    """The `WITH` clause that yields `indices` as rows `element(i)`; they must step evenly upwards."""
    if not indices:
        raise ValueError("an array has at least one element")
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    if step < 1 or tuple(range(indices[0], indices[-1] + 1, step)) != tuple(indices):
        raise ValueError("array indices must step evenly upwards")
    return Sql(_ELEMENTS, (indices[0], step, step, indices[-1]))


def name_with_index(name: str) -> Sql:
    """`name[i]` for each element."""
    return Sql("CAST(%s AS TEXT) || CAST(element.i AS TEXT) || ']'", (f"{name}[",))


def env_with_index(instance: Model, column: str = "env") -> Sql:
    """The instance's JSON `column` with ARRAY_INDEX set to each element's index."""
    template = _ENV_WITH_INDEX.get(connection.vendor)
    if template is None:
        raise NotImplementedError(f"array submission does not support the {connection.vendor} database")
    return Sql(template.format(env="%s"), (prepared(instance, column),))


def prepared(instance: Model, column: str) -> Any:
    """The instance's value of `column` as the ORM would send it on insert."""
    field = next(f for f in instance._meta.concrete_fields if f.column == column)
    return field.get_db_prep_save(field.pre_save(instance, True), connection)


def insert_select(
    instance: Model, computed: Mapping[str, Sql], source: Sql, *, prefix: Sql = Sql(""), returning: Sequence[str] = ()
) -> Sql:
    """`[prefix] INSERT INTO <table> (<every column but the key>) SELECT ... FROM <source> [RETURNING ...]`.

    A column named in `computed` takes that expression (per row of `source`); every other column
    takes `instance`'s value as one parameter.
    """
    quote = connection.ops.quote_name
    columns: list[str] = []
    values: list[str] = []
    params: list[Any] = list(prefix.params)
    for field in instance._meta.concrete_fields:
        column = field.column
        if field.primary_key or column is None:
            continue
        columns.append(quote(column))
        expression = computed.get(column)
        if expression is None:
            values.append("%s")
            params.append(field.get_db_prep_save(field.pre_save(instance, True), connection))
        else:
            values.append(expression.text)
            params.extend(expression.params)
    unknown = set(computed) - {f.column for f in instance._meta.concrete_fields}
    if unknown:
        raise ValueError(f"no such columns: {', '.join(sorted(unknown))}")
    params.extend(source.params)
    text = (
        f"{prefix.text} INSERT INTO {quote(instance._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM {source.text}"
    )
    if returning:
        text += " RETURNING " + ", ".join(quote(c) for c in returning)
    return Sql(text.strip(), tuple(params))


def update_rows(
    model: type[Model], columns: Sequence[str], rows: Sequence[tuple[Any, ...]], *, key: str = "id", guard: str = ""
) -> list[Sql]:
    """`UPDATE` many rows to their own values in one statement per thousand rows: each row is
    (key, [guard,] *values of `columns`). With `guard`, a row is written only while its `guard`
    column still holds the given value (a conditional update, as `filter(...).update(...)` is).
    Values are prepared as the ORM prepares them; PostgreSQL gets each one cast to its column's type."""
    fields = {f.column: f for f in model._meta.concrete_fields}
    names = [key, *([guard] if guard else []), *columns]
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"no such columns: {', '.join(unknown)}")
    quote = connection.ops.quote_name
    cast = connection.vendor == "postgresql"
    placeholder = ", ".join(f"CAST(%s AS {fields[n].db_type(connection)})" if cast else "%s" for n in names)
    table = quote(model._meta.db_table)
    where = f"{table}.{quote(key)} = v.{quote(key)}" + (f" AND {table}.{quote(guard)} = v.{quote(guard)}" if guard else "")
    assignments = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in columns)
    statements: list[Sql] = []
    for start in range(0, len(rows), UPDATE_CHUNK):
        chunk = rows[start : start + UPDATE_CHUNK]
        params = [fields[n].get_db_prep_save(value, connection) for row in chunk for n, value in zip(names, row, strict=True)]
        text = (
            f"WITH v ({', '.join(quote(n) for n in names)}) AS (VALUES {', '.join(f'({placeholder})' for _ in chunk)}) "
            f"UPDATE {table} SET {assignments} FROM v WHERE {where}"
        )
        statements.append(Sql(text, tuple(params)))
    return statements


UPDATE_CHUNK = 1000  # rows per statement: SQLite allows 32,766 parameters
