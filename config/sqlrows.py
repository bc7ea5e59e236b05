"""Model instances from hand-written SQL, for the few queries on every payment's path.

Building a query through the ORM costs about 1 ms of CPU on the benchmark machine (compiling
the SQL, resolving joins, picking converters), several times the round trip itself; a
payment ran a dozen of them (bench/RESULTS.md, "API vs LNbits"). `ModelSql` keeps what
the ORM would compute for a model's columns once per process and turns a row back into an
instance as the ORM does: the database's and the field's converters, then `Model.from_db`.
The SQL stays readable and portable (PostgreSQL and SQLite); everything else uses the ORM.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model

M = TypeVar("M", bound=Model)
_CODE = re.compile(r"[a-z][a-z_]*")


def code_literals(values: Sequence[str]) -> str:
    """Our own status codes as SQL literals ('pending', 'succeeded'), never user input. Written
    into the statement, not passed as parameters, so that PostgreSQL can use a partial index
    whose WHERE names them even in the generic plan of a prepared statement."""
    for value in values:
        if not _CODE.fullmatch(str(value)):
            raise ValueError(f"not a status code: {value!r}")
    return ", ".join(f"'{value}'" for value in values)


Converter = Callable[[Any, Any, Any], Any]


class ModelSql(Generic[M]):
    """The concrete columns of `model` under a table alias, in field order: all of them, or
    `only` those named (attnames; the primary key always). An instance read with `only`
    has the other fields deferred, as `QuerySet.only()` makes them: reading one costs a
    query, so `only` is for reads whose users are known (the hot-path tests count queries)."""

    def __init__(self, model: type[M], alias: str, *, only: Sequence[str] | None = None) -> None:
        self.model = model
        self.alias = alias
        fields = list(model._meta.concrete_fields)
        if only is not None:
            unknown = set(only) - {field.attname for field in fields}
            if unknown:
                raise ValueError(f"{model.__name__} has no columns {sorted(unknown)}")
            fields = [field for field in fields if field.primary_key or field.attname in only]
        self.fields = fields
        self.attnames = [field.attname for field in self.fields]
        self.width = len(self.fields)
        self.table = model._meta.db_table
        # Converters are per connection (they are bound to its backend's operations).
        self._converters: WeakKeyDictionary[Any, list[tuple[Any, list[Converter]]]] = (
            WeakKeyDictionary()
        )

    @cached_property
    def _insert_fields(self) -> list:
        return [field for field in self.fields if not field.primary_key]

    @cached_property
    def _insert_into(self) -> tuple[str, str]:
        """("INSERT INTO table (columns)", "RETURNING pk")."""
        ops = connections[DEFAULT_DB_ALIAS].ops
        columns = ", ".join(ops.quote_name(field.column) for field in self._insert_fields)
        into = f"INSERT INTO {ops.quote_name(self.table)} ({columns})"
        return into, f"RETURNING {ops.quote_name(self.model._meta.pk.column)}"

    def _insert_values(self, instance: M, db) -> list:
        # As save() prepares a new row: each field's pre_save (auto_now_add, ...), then the
        # database's preparation of the value.
        return [
            field.get_db_prep_save(field.pre_save(instance, True), connection=db)
            for field in self._insert_fields
        ]

    def inserted(self, instance: M, row: Sequence[Any] | None) -> M | None:
        """Mark the instance saved under the primary key in `row` (None: it was not)."""
        if row is None:
            return None
        instance.pk = row[0]
        instance._state.adding = False
        instance._state.db = DEFAULT_DB_ALIAS
        return instance

    def insert(self, instance: M) -> M:
        """INSERT a new instance as `save()` would and set its primary key. No signals are
        sent: only for models without save signal receivers."""
        db = connections[DEFAULT_DB_ALIAS]
        values = self._insert_values(instance, db)
        into, returning = self._insert_into
        marks = ", ".join(["%s"] * len(values))
        with db.cursor() as cursor:
            cursor.execute(f"{into} VALUES ({marks}) {returning}", values)
            return self.inserted(instance, cursor.fetchone())

    def insert_if_sql(
        self, instance: M, *, source: str, condition: str, params: Sequence[Any]
    ) -> tuple[str, list]:
        """An INSERT of the instance (as `insert` prepares it) that writes only if the table
        `source` has a row matching `condition`, and locks that row until the transaction ends
        (where the database locks rows; SQLite has one writer at a time anyway): the check and
        the write in one statement, which may be part of a larger one. Returns the SQL and
        its parameters; the statement returns the new primary key, or no row."""
        db = connections[DEFAULT_DB_ALIAS]
        values = self._insert_values(instance, db)
        into, returning = self._insert_into
        marks = ", ".join(["%s"] * len(values))
        lock = " FOR UPDATE" if db.features.has_select_for_update else ""
        sql = f"{into} SELECT {marks} FROM {source} WHERE {condition}{lock} {returning}"
        return sql, [*values, *params]

    @cached_property
    def select(self) -> str:
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        return ", ".join(f"{self.alias}.{quote(field.column)}" for field in self.fields)

    def where(self, condition: str, params: Sequence[Any] = ()) -> list[M]:
        """The instances of the rows matching `condition` (SQL on this alias's columns)."""
        db = connections[DEFAULT_DB_ALIAS]
        with db.cursor() as cursor:
            cursor.execute(
                f"SELECT {self.select} FROM {self.table} {self.alias} WHERE {condition}", params
            )
            return [self.instance(row, connection=db) for row in cursor.fetchall()]

    def _converters_for(self, connection) -> list[tuple[Any, list[Converter]]]:
        found = self._converters.get(connection)
        if found is None:
            found = []
            for field in self.fields:
                column = field.get_col(self.alias)
                found.append(
                    (
                        column,
                        connection.ops.get_db_converters(column)
                        + column.get_db_converters(connection),
                    )
                )
            self._converters[connection] = found
        return found

    def instance(self, row: Sequence[Any], start: int = 0, *, connection=None) -> M:
        """The instance whose columns begin at `row[start]` (as selected by `select`)."""
        db = connection or connections[DEFAULT_DB_ALIAS]
        values = list(row[start : start + self.width])
        for index, (column, converters) in enumerate(self._converters_for(db)):
            value = values[index]
            for converter in converters:
                value = converter(value, column, db)
            values[index] = value
        return self.model.from_db(db.alias, self.attnames, values)
