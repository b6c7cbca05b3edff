"""The upload path's SQL, generated once per synced table from its declaration.

Every statement takes a whole set of rows (ids as an array, rows as one JSON document), so
applying a transaction costs a fixed number of statements per table it touches, whatever its
size. Identifiers come from the declarations (checked to be plain lower-case names there) and
are quoted anyway; every value is a bound parameter.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import TextClause, text

from papyrus import contract
from papyrus.contract import Stamp, Type
from papyrus.server.sync.models import id_sql_type, sql_type
from papyrus.server.sync.plan import needs_row


def _q(name: str) -> str:
    return f'"{name}"'


@cache
def load(tables: tuple[contract.Table, ...]) -> TextClause:
    """One statement for the whole upload: locks the stored rows among each table's `:ids_<n>`
    (tables in declaration order, ids in order, so concurrent uploads cannot deadlock on them)
    and lists them with their owner (and values, where `needs_row`), then the caller's
    tombstones among every wanted row (`:wanted`, `[{t, id}]`) that was not found."""
    ctes, found, listed = [], [], []
    for n, table in enumerate(tables):
        row = "to_jsonb(t)" if needs_row(table) else "NULL::jsonb"
        ctes.append(
            f"""l{n} AS (
            SELECT t.id::text AS id, t.owner_user_id::text AS owner, {row} AS row
            FROM {_q(table.name)} AS t
            WHERE t.id = ANY(CAST(:ids_{n} AS {id_sql_type(table)}[]))
            ORDER BY t.id FOR UPDATE)"""
        )
        listed.append(f"SELECT '{table.name}' AS tbl, id, owner, row, false AS gone FROM l{n}")
        found.append(f"SELECT '{table.name}' AS t, id FROM l{n}")
    return text(
        f"""
        WITH {", ".join(ctes)}
        {" UNION ALL ".join(listed)}
        UNION ALL
        SELECT s.table_name, s.row_id, NULL, NULL, true FROM sync_tombstones AS s
        WHERE s.user_id = :owner
          AND (s.table_name, s.row_id) IN (
              SELECT w.t, w.id
              FROM jsonb_to_recordset(CAST(:wanted AS jsonb)) AS w(t text, id text))
          AND (s.table_name, s.row_id) NOT IN ({" UNION ALL ".join(found)})
        """
    )


@cache
def delete(table: contract.Table) -> TextClause:
    return text(
        f"DELETE FROM {_q(table.name)} "
        f"WHERE id = ANY(CAST(:ids AS {id_sql_type(table)}[])) AND owner_user_id = :owner"
    )


@cache
def upsert(table: contract.Table) -> TextClause:
    """PUT: inserts or replaces whole rows (a column left out becomes NULL; validation already
    filled declared defaults). The guard skips rows of another user, and stored rows whose
    values the declarations protect (a changed immutable column, a closed row): the caller
    compares the count it returns with the rows it sent, and decides those rows with their
    stored values loaded."""
    writable = list(table.writable_columns)
    names = [_q(c.name) for c in writable]
    stamps = [c for c in table.columns if c.stamp is not None]
    updated = [c for c in stamps if c.stamp is Stamp.UPDATED]
    assignments = [f"{n} = excluded.{n}" for n in names if n not in _id_from(table)]
    assignments += [f"{_q(c.name)} = excluded.{_q(c.name)}" for c in updated]
    record = ", ".join(
        [f"id {id_sql_type(table)}"] + [f"{_q(c.name)} {sql_type(c)}" for c in writable]
    )
    return text(
        f"""
        WITH written AS (
        INSERT INTO {_q(table.name)} AS b
            (id, owner_user_id, {", ".join(names + [_q(c.name) for c in stamps])})
        SELECT r.id, :owner, {", ".join([f"r.{n}" for n in names] + ["now()"] * len(stamps))}
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({record})
        ON CONFLICT (id) DO UPDATE SET {", ".join(assignments) or "id = excluded.id"}
        WHERE {" AND ".join(_guard(table))}
        RETURNING 1)
        SELECT count(*) FROM written
        """
    )


@cache
def foreign(table: contract.Table) -> TextClause:
    """Which of `:ids` another user owns (after the upsert's owner guard skipped some)."""
    return text(
        f"SELECT id::text FROM {_q(table.name)} "
        f"WHERE id = ANY(CAST(:ids AS {id_sql_type(table)}[])) AND owner_user_id <> :owner"
    )


@cache
def patch(table: contract.Table) -> TextClause:
    """PATCH: changes only the listed columns of each row (JSON null clears); no-op if absent."""
    assignments = []
    for column in table.writable_columns:
        if column.immutable:
            continue  # validation refuses a PATCH that names it
        name = column.name
        if column.type is Type.JSON:
            value = f"nullif(p.d -> '{name}', 'null'::jsonb)"
        elif column.type is Type.TEXT:
            value = f"p.d ->> '{name}'"
        else:
            value = f"CAST(p.d ->> '{name}' AS {sql_type(column)})"
        assignments.append(
            f"{_q(name)} = CASE WHEN p.d ? '{name}' THEN {value} ELSE b.{_q(name)} END"
        )
    assignments += [f"{_q(c.name)} = now()" for c in table.columns if c.stamp is Stamp.UPDATED]
    return text(
        f"""
        UPDATE {_q(table.name)} AS b SET {", ".join(assignments)}
        FROM (
            SELECT CAST(e ->> 'id' AS {id_sql_type(table)}) AS id, e -> 'set' AS d
            FROM jsonb_array_elements(CAST(:patches AS jsonb)) AS e
        ) AS p
        WHERE b.id = p.id AND b.owner_user_id = :owner
        """
    )


@cache
def unique_keys(table: contract.Table, unique: contract.Unique) -> TextClause:
    """The normalised key of each row the transaction writes (`mine`), and the caller's stored
    rows holding one of those keys: both folded by PostgreSQL, as the unique index folds them."""

    def key(alias: str) -> str:
        parts = [
            f"lower({alias}.{_q(c)})" if unique.case_insensitive else f"{alias}.{_q(c)}"
            for c in unique.columns
        ]
        return f"jsonb_build_array({', '.join(parts)})::text"

    record = ", ".join(
        ["id text"] + [f"{_q(c)} {sql_type(table.column(c))}" for c in unique.columns]
    )
    return text(
        f"""
        WITH k AS (
            SELECT k.id, {key("k")} AS key
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS k({record}))
        SELECT id, key, true AS mine FROM k
        UNION ALL
        SELECT t.id::text, {key("t")}, false FROM {_q(table.name)} AS t
        WHERE t.owner_user_id = :owner AND {key("t")} IN (SELECT key FROM k)
        """
    )


@cache
def ancestry(table: contract.Table) -> TextClause:
    """The stored parent of every row reachable upwards from `:ids` (the caller's rows only)."""
    column = _q(table.acyclic or "")
    name = _q(table.name)
    return text(
        f"""
        WITH RECURSIVE up(id, parent) AS (
            SELECT t.id, t.{column} FROM {name} AS t
            WHERE t.owner_user_id = :owner AND t.id = ANY(CAST(:ids AS {id_sql_type(table)}[]))
            UNION
            SELECT t.id, t.{column} FROM {name} AS t JOIN up ON t.id = up.parent
            WHERE t.owner_user_id = :owner)
        SELECT id::text, parent::text FROM up
        """
    )


FORGET_TOMBSTONES = text(
    """
    DELETE FROM sync_tombstones AS s
    USING jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(t text, id text)
    WHERE s.user_id = :owner AND s.table_name = r.t AND s.row_id = r.id
    """
)
"""Rows written again (after a delete in the same upload, or with a parent deleted and written
again) are no longer deleted."""

PRUNE_TOMBSTONES = text(
    "DELETE FROM sync_tombstones "
    "WHERE user_id = :owner AND deleted_at < now() - make_interval(days => :days)"
)


def _guard(table: contract.Table) -> list[str]:
    guard = ["b.owner_user_id = excluded.owner_user_id"]
    guard += [
        f"b.{_q(c.name)} IS NOT DISTINCT FROM excluded.{_q(c.name)}"
        for c in table.columns
        if c.immutable and c.name not in (table.id_from or ())
    ]
    if table.closed_by is not None:
        guard.append(f"b.{_q(table.closed_by)} IS NULL")
    return guard


def _id_from(table: contract.Table) -> set[str]:
    return {_q(n) for n in table.id_from or ()}
