"""The subset of PowerSync sync config this development service understands.

The sync config (by default the packaged `src/papyrus/sync_config/sync-config.yaml`) is parsed
with a real SQL parser (pglast). Supported: `config: edition: 2` or `3`, `streams:` whose
`query` is a single-table SELECT of columns (with aliases, `*`, constants and casts to
text/integer/real/numeric/blob), filtered by ANDed `<row expression> = auth.user_id()` /
`auth.parameter('x')` / `subscription.parameter('x')` / `connection.parameter('x')` and row-only
conditions (`= <constant>`, `IS [NOT] NULL`), plus legacy `bucket_definitions` (edition 2 only)
whose parameter query has no FROM. Everything else is refused at start-up with a message that
names the construct, so nothing silently syncs differently from the real service. Within this
subset editions 2 and 3 evaluate rows alike (edition 3 is the service's compiled Sync Streams;
its compiler warns that edition 2 streams are an alpha version).

Bucket names follow the service: `<version>#<stream>|<variant>[<params JSON>]` for streams and
`<version>#<definition>[<params JSON>]` for bucket definitions (versioned ids are on from
edition 2). A stream filtered on several request values lists them in WHERE order; the edition 3
compiler orders them by an internal hash, so those bucket ids can differ from the service's
(clients treat bucket ids as opaque; the rows each client receives are the same).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType
from pglast.parser import ParseError

from papyrus.devsync.values import SqliteValue, bucket_parameters_json, js_number, row_json

REAL_SERVICE_HINT = (
    "The development sync service supports only a subset of PowerSync sync config; "
    "use the PowerSync service (docker-compose.yml) for this construct."
)

_CAST_TYPES = {
    ("text",): "text",
    ("pg_catalog", "text"): "text",
    ("pg_catalog", "int4"): "integer",
    ("integer",): "integer",
    ("pg_catalog", "float4"): "real",
    ("real",): "real",
    ("pg_catalog", "numeric"): "numeric",
    ("numeric",): "numeric",
    ("blob",): "blob",
}


EDITIONS = (2, 3)


class SyncConfigError(ValueError):
    """The sync config cannot be served by this development service."""


def _unsupported(construct: str, where: str) -> SyncConfigError:
    return SyncConfigError(f"{where}: {construct} is not supported. {REAL_SERVICE_HINT}")


_T = TypeVar("_T")


def _given(value: _T | None) -> _T:
    """A field the PostgreSQL grammar always fills in this node (pglast types every field as
    optional, since a hand-built node may leave any out)."""
    assert value is not None
    return value


RowGetter = Callable[[dict[str, SqliteValue]], SqliteValue]
# True keeps the row; False and None (SQL's unknown, from a comparison with NULL) drop it.
RowFilter = Callable[[dict[str, SqliteValue]], bool | None]


@dataclass(frozen=True)
class RequestValue:
    """A value taken from the request: the JWT (`auth.*`), a subscription or the connection."""

    source: str  # "user_id" | "auth" | "subscription" | "connection" | "token_parameters"
    key: str | None = None

    def resolve(self, ctx: RequestContext, subscription: dict[str, Any] | None) -> SqliteValue:
        if self.source == "user_id":
            return ctx.user_id
        if self.source == "auth":
            raw = ctx.token_payload.get(self.key or "")
        elif self.source == "token_parameters":
            params = ctx.token_payload.get("parameters")
            raw = params.get(self.key) if isinstance(params, dict) else None
        elif self.source == "subscription":
            raw = (subscription or {}).get(self.key or "")
        else:
            raw = (ctx.client_parameters or {}).get(self.key or "")
        return _json_to_sqlite(raw)


def _json_to_sqlite(value: Any) -> SqliteValue:
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, str | int | float) or value is None:
        return value
    return None


@dataclass(frozen=True)
class RequestContext:
    """What a sync request knows about the caller."""

    user_id: str
    token_payload: dict[str, Any]
    client_parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class EvaluatedRow:
    bucket: str
    object_type: str
    object_id: str
    data: str


@dataclass
class DataQuery:
    """One compiled single-table SELECT."""

    schema: str
    table: str
    output_table: str
    columns: list[tuple[str, RowGetter]] | None  # None: SELECT * only
    star: bool
    row_filters: list[RowFilter]
    parameters: list[tuple[RowGetter, RequestValue]]
    bucket_prefix: str = ""
    # (output name, source column, cast or None, type the cast leaves unchanged), when every
    # selected item is a column or a cast of one: the common case, evaluated without closures.
    plan: list[tuple[str, str, Callable[[SqliteValue], SqliteValue] | None, type]] | None = None

    def transform(self, row: dict[str, SqliteValue]) -> dict[str, SqliteValue]:
        out: dict[str, SqliteValue] = dict(row) if self.star else {}
        if self.plan is not None:
            get = row.get
            for name, source, cast, keep in self.plan:
                value = get(source)
                if cast is not None and value is not None and value.__class__ is not keep:
                    value = cast(value)
                out[name] = value
        elif self.columns:
            for name, getter in self.columns:
                out[name] = getter(row)
        return out

    def evaluate(self, row: dict[str, SqliteValue]) -> list[EvaluatedRow]:
        for check in self.row_filters:
            if not check(row):
                return []
        values = []
        for getter, _ in self.parameters:
            value = getter(row)
            if value is None or isinstance(value, bytes):
                return []  # NULL matches no request value
            values.append(value)
        data = self.transform(row)
        object_id = _id_from_data(data.get("id"))
        text = row_json(data)
        bucket = self.bucket_prefix + bucket_parameters_json(values)
        return [EvaluatedRow(bucket, self.output_table, object_id, text)]


def _id_from_data(value: SqliteValue) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _cast_text(value) or ""


@dataclass
class StreamDefinition:
    """A stream (or a legacy bucket definition, which behaves as a default stream)."""

    name: str
    priority: int
    auto_subscribe: bool
    query: DataQuery
    legacy: bool = False
    static_parameters: list[RequestValue] = field(default_factory=list)

    def request_values(self) -> list[RequestValue]:
        return self.static_parameters or [value for _, value in self.query.parameters]


@dataclass(frozen=True)
class ResolvedBucket:
    bucket: str
    priority: int
    subscriptions: tuple[dict[str, int], ...]


@dataclass(frozen=True)
class ResolvedRequest:
    buckets: list[ResolvedBucket]
    streams: list[dict[str, Any]]


class SyncConfig:
    """Parsed sync config: evaluates replicated rows and resolves requests into buckets."""

    def __init__(self, streams: list[StreamDefinition], source_text: str) -> None:
        self.streams = streams
        self.source_hash = hashlib.sha256(source_text.encode()).hexdigest()
        self.version = 1
        self._by_table: dict[tuple[str, str], list[DataQuery]] = {}
        for stream in streams:
            key = (stream.query.schema, stream.query.table)
            self._by_table.setdefault(key, []).append(stream.query)
        self.set_version(1)

    def set_version(self, version: int) -> None:
        """Bucket names carry the config version, so a changed config starts fresh buckets."""
        self.version = version
        for stream in self.streams:
            suffix = "" if stream.legacy else "|0"
            stream.query.bucket_prefix = f"{version}#{stream.name}{suffix}"

    def tables(self) -> set[tuple[str, str]]:
        return set(self._by_table)

    def evaluate(self, schema: str, table: str, row: dict[str, SqliteValue]) -> list[EvaluatedRow]:
        """Every (bucket, object) this source row belongs to."""
        queries = self._by_table.get((schema, table))
        if not queries:
            return []
        if len(queries) == 1:
            return queries[0].evaluate(row)
        result: list[EvaluatedRow] = []
        for query in queries:
            result.extend(query.evaluate(row))
        return result

    def resolve(
        self, ctx: RequestContext, streams_request: dict[str, Any] | None
    ) -> ResolvedRequest:
        """The buckets and `streams` entries of a checkpoint for this request."""
        include_defaults = True
        subscriptions: list[dict[str, Any]] = []
        if streams_request is not None:
            include_defaults = streams_request.get("include_defaults", True) is not False
            subscriptions = list(streams_request.get("subscriptions") or [])

        by_bucket: dict[str, tuple[int, list[dict[str, int]]]] = {}
        streams_out: list[dict[str, Any]] = []

        def add(bucket: str, priority: int, reason: dict[str, int]) -> None:
            current = by_bucket.get(bucket)
            if current is None:
                by_bucket[bucket] = (priority, [reason])
            else:
                current[1].append(reason)
                by_bucket[bucket] = (min(current[0], priority), current[1])

        for stream in self.streams:
            explicit = [
                (j, s) for j, s in enumerate(subscriptions) if s.get("stream") == stream.name
            ]
            default = stream.auto_subscribe and include_defaults
            if not default and not explicit:
                continue
            index = len(streams_out)
            streams_out.append(
                {"name": stream.name, "is_default": stream.auto_subscribe, "errors": []}
            )
            if default:
                bucket = self._bucket_for(stream, ctx, None)
                if bucket is not None:
                    add(bucket, stream.priority, {"default": index})
            for j, sub in explicit:
                bucket = self._bucket_for(stream, ctx, sub.get("parameters"))
                if bucket is not None:
                    override = sub.get("override_priority")
                    priority = override if isinstance(override, int) else stream.priority
                    add(bucket, priority, {"sub": j})

        buckets = [
            ResolvedBucket(name, priority, tuple(reasons))
            for name, (priority, reasons) in by_bucket.items()
        ]
        return ResolvedRequest(buckets=buckets, streams=streams_out)

    def _bucket_for(
        self, stream: StreamDefinition, ctx: RequestContext, subscription: dict[str, Any] | None
    ) -> str | None:
        values = []
        for request_value in stream.request_values():
            value = request_value.resolve(ctx, subscription)
            if value is None:
                return None
            values.append(value)
        return stream.query.bucket_prefix + bucket_parameters_json(values)


# ---------------------------------------------------------------------------------------------
# Loading


def load_sync_config(path: str | Path) -> SyncConfig:
    """Parse a sync-config.yaml file; raises SyncConfigError naming any unsupported construct."""
    text = Path(path).read_text()
    return parse_sync_config(text)


def parse_sync_config(text: str) -> SyncConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SyncConfigError(f"sync config is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise SyncConfigError("sync config must be a YAML mapping")
    for key in doc:
        if key not in ("config", "streams", "bucket_definitions"):
            raise _unsupported(f"top-level key '{key}'", "sync config")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise SyncConfigError("sync config: 'config' must be a mapping")
    for key in config:
        if key != "edition":
            raise _unsupported(f"config option '{key}'", "sync config")
    edition = config.get("edition", 1)
    if edition not in EDITIONS:
        raise _unsupported(
            f"config edition {edition!r} (only editions 2 and 3 are implemented)", "sync config"
        )
    if edition >= 3 and "bucket_definitions" in doc:
        # The service's compiler for edition 3 refuses them too.
        raise SyncConfigError("sync config: edition 3 has no bucket_definitions; use streams")
    streams: list[StreamDefinition] = []
    for name, spec in (doc.get("streams") or {}).items():
        streams.append(_parse_stream(str(name), spec))
    for name, spec in (doc.get("bucket_definitions") or {}).items():
        streams.append(_parse_bucket_definition(str(name), spec))
    if not streams:
        raise SyncConfigError("sync config defines no streams or bucket_definitions")
    return SyncConfig(streams, text)


def _priority(value: Any, where: str) -> int:
    if value is None:
        return 3
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3:
        raise SyncConfigError(f"{where}: priority must be an integer from 0 to 3")
    return value


def _parse_stream(name: str, spec: Any) -> StreamDefinition:
    where = f"stream '{name}'"
    if not isinstance(spec, dict):
        raise SyncConfigError(f"{where}: must be a mapping with a 'query'")
    for key in spec:
        if key not in (
            "query",
            "auto_subscribe",
            "priority",
            "accept_potentially_dangerous_queries",
        ):
            raise _unsupported(f"stream option '{key}'", where)
    query = spec.get("query")
    if not isinstance(query, str):
        raise SyncConfigError(f"{where}: 'query' must be a SQL string")
    compiled = _compile_query(query, where, stream_functions=True, bucket_parameters=None)
    return StreamDefinition(
        name=name,
        priority=_priority(spec.get("priority"), where),
        auto_subscribe=spec.get("auto_subscribe") is True,
        query=compiled,
    )


def _parse_bucket_definition(name: str, spec: Any) -> StreamDefinition:
    where = f"bucket definition '{name}'"
    if not isinstance(spec, dict):
        raise SyncConfigError(f"{where}: must be a mapping with 'data'")
    for key in spec:
        if key not in ("parameters", "data", "priority", "accept_potentially_dangerous_queries"):
            raise _unsupported(f"bucket definition option '{key}'", where)
    parameters = spec.get("parameters")
    if isinstance(parameters, list):
        if len(parameters) > 1:
            raise _unsupported("more than one parameter query", where)
        parameters = parameters[0] if parameters else None
    static: list[tuple[str, RequestValue]] = []
    if parameters is not None:
        static = _compile_parameter_query(str(parameters), where)
    data = spec.get("data")
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or len(data) != 1:
        raise _unsupported("a bucket definition without exactly one data query", where)
    names = [n for n, _ in static]
    query = _compile_query(str(data[0]), where, stream_functions=False, bucket_parameters=names)
    # Bucket parameters keep the parameter query's column order.
    by_name = {value.key: getter for getter, value in query.parameters}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SyncConfigError(f"{where}: data query does not filter on bucket.{missing[0]}")
    query.parameters = [(by_name[n], RequestValue("bucket", n)) for n in names]
    return StreamDefinition(
        name=name,
        priority=_priority(spec.get("priority"), where),
        auto_subscribe=True,
        query=query,
        legacy=True,
        static_parameters=[value for _, value in static],
    )


def _parse_select(sql: str, where: str) -> ast.SelectStmt:
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise SyncConfigError(f"{where}: SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise _unsupported("more than one SQL statement", where)
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        raise _unsupported(f"{type(stmt).__name__} (only SELECT)", where)
    checks = [
        ("WITH (common table expressions)", stmt.withClause),
        ("UNION/INTERSECT/EXCEPT", stmt.larg or stmt.rarg),
        ("VALUES", stmt.valuesLists),
        ("DISTINCT", stmt.distinctClause),
        ("GROUP BY", stmt.groupClause),
        ("HAVING", stmt.havingClause),
        ("window functions (WINDOW)", stmt.windowClause),
        ("ORDER BY", stmt.sortClause),
        ("LIMIT", stmt.limitCount),
        ("OFFSET", stmt.limitOffset),
        ("SELECT INTO", stmt.intoClause),
        ("FOR UPDATE/SHARE", stmt.lockingClause),
    ]
    for construct, present in checks:
        if present:
            raise _unsupported(construct, where)
    return stmt


def _compile_query(
    sql: str, where: str, *, stream_functions: bool, bucket_parameters: list[str] | None
) -> DataQuery:
    stmt = _parse_select(sql, where)
    from_clause = stmt.fromClause or ()
    if len(from_clause) != 1:
        raise _unsupported(
            "a query without exactly one table in FROM (joins and multiple tables)", where
        )
    source = from_clause[0]
    if not isinstance(source, ast.RangeVar):
        construct = {
            "JoinExpr": "JOIN",
            "RangeSubselect": "a subquery in FROM",
            "RangeFunction": "a function in FROM",
        }.get(type(source).__name__, type(source).__name__)
        raise _unsupported(construct, where)
    relname = _given(source.relname)
    alias = source.alias.aliasname if source.alias else None
    table_names = {relname} | ({alias} if alias else set())
    scope = _Scope(where, table_names, stream_functions, bucket_parameters)

    columns: list[tuple[str, RowGetter]] = []
    plan: list[tuple[str, str, Any, type]] | None = []
    star = False
    for target in stmt.targetList or ():
        val = target.val
        if isinstance(val, ast.ColumnRef) and isinstance(_given(val.fields)[-1], ast.A_Star):
            if target.name:
                raise _unsupported("an alias on *", where)
            star = True
            continue
        getter = scope.row_expression(val)
        name = target.name or scope.default_name(val)
        columns.append((name, getter))
        simple = scope.simple_column(val)
        if plan is not None and simple is not None:
            plan.append((name, *simple))
        else:
            plan = None

    row_filters: list[RowFilter] = []
    parameters: list[tuple[RowGetter, RequestValue]] = []
    if stmt.whereClause is not None:
        for condition in _conjuncts(stmt.whereClause, where):
            scope.condition(condition, row_filters, parameters)

    return DataQuery(
        schema=source.schemaname or "public",
        table=relname,
        output_table=alias or relname,
        columns=columns,
        star=star,
        row_filters=row_filters,
        parameters=parameters,
        plan=plan,
    )


def _compile_parameter_query(sql: str, where: str) -> list[tuple[str, RequestValue]]:
    stmt = _parse_select(sql, where)
    if stmt.fromClause or stmt.whereClause:
        raise _unsupported(
            "a parameter query with FROM or WHERE (only `SELECT request.user_id() AS x`)", where
        )
    scope = _Scope(where, set(), stream_functions=False, bucket_parameters=None)
    result = []
    for target in stmt.targetList or ():
        value = scope.request_value(target.val)
        if value is None:
            raise _unsupported(f"parameter expression {_describe(target.val)}", where)
        name = target.name or (value.key or "user_id")
        result.append((name, value))
    return result


def _conjuncts(node: ast.Node, where: str) -> Iterable[ast.Node]:
    if isinstance(node, ast.BoolExpr):
        if node.boolop != BoolExprType.AND_EXPR:
            raise _unsupported(f"{_given(node.boolop).name.replace('_EXPR', '')} in WHERE", where)
        for arg in _given(node.args):
            yield from _conjuncts(arg, where)
    else:
        yield node


def _describe(node: ast.Node) -> str:
    if isinstance(node, ast.FuncCall):
        return f"function {'.'.join(s.sval for s in _given(node.funcname))}()"
    if isinstance(node, ast.SubLink):
        return "a subquery"
    if isinstance(node, ast.A_Expr):
        op = ".".join(getattr(s, "sval", "?") for s in node.name or ())
        kind = _given(node.kind)
        return f"operator '{op}'" if kind == A_Expr_Kind.AEXPR_OP else kind.name
    return type(node).__name__


class _Scope:
    def __init__(
        self,
        where: str,
        table_names: set[str],
        stream_functions: bool,
        bucket_parameters: list[str] | None,
    ) -> None:
        self.where = where
        self.table_names = table_names
        self.stream_functions = stream_functions
        self.bucket_parameters = bucket_parameters

    def default_name(self, node: ast.Node) -> str:
        while isinstance(node, ast.TypeCast):
            node = _given(node.arg)
        if isinstance(node, ast.ColumnRef):
            name: str = _given(node.fields)[-1].sval
            return name
        raise SyncConfigError(f"{self.where}: give the expression {_describe(node)} an alias")

    def _column_name(self, node: ast.ColumnRef) -> str:
        names = [_given(f.sval) for f in _given(node.fields) if isinstance(f, ast.String)]
        if len(names) == 2 and names[0] in self.table_names:
            return names[1]
        if len(names) == 1:
            return names[0]
        raise _unsupported(f"column reference {'.'.join(names)}", self.where)

    def simple_column(self, node: ast.Node) -> tuple[str, Any, type] | None:
        """(source column, cast, type the cast keeps as is) for `col` or `col::type`."""
        if isinstance(node, ast.ColumnRef):
            return self._column_name(node), None, type(None)
        if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.ColumnRef):
            target = _CAST_TYPES.get(tuple(s.sval for s in _given(_given(node.typeName).names)))
            if target is not None:
                keep = {"text": str, "integer": int, "real": float, "blob": bytes}.get(target)
                return self._column_name(node.arg), _CASTS[target], keep or type(None)
        return None

    def row_expression(self, node: ast.Node) -> RowGetter:
        """A getter for a column, constant or cast thereof; anything else is refused."""
        if isinstance(node, ast.ColumnRef):
            if self.bucket_parameters is not None and self._bucket_ref(node) is not None:
                raise _unsupported("bucket.* outside a WHERE comparison", self.where)
            name = self._column_name(node)
            return lambda row: row.get(name)
        if isinstance(node, ast.A_Const):
            value = _constant(node)
            return lambda row: value
        if isinstance(node, ast.TypeCast):
            names = tuple(s.sval for s in _given(_given(node.typeName).names))
            target = _CAST_TYPES.get(names)
            if target is None:
                raise _unsupported(f"cast to {'.'.join(names)}", self.where)
            inner = self.row_expression(_given(node.arg))
            cast = _CASTS[target]
            return lambda row: cast(inner(row))
        raise _unsupported(f"{_describe(node)} in a row expression", self.where)

    def _bucket_ref(self, node: ast.Node) -> str | None:
        if isinstance(node, ast.ColumnRef) and len(fields := _given(node.fields)) == 2:
            first, second = fields
            if isinstance(first, ast.String) and first.sval == "bucket":
                parameter: str = second.sval
                return parameter
        return None

    def request_value(self, node: ast.Node) -> RequestValue | None:
        """The request-side value of a comparison, or None if the node is not one."""
        if self.bucket_parameters is not None:
            name = self._bucket_ref(node)
            if name is not None:
                if name not in self.bucket_parameters:
                    raise SyncConfigError(f"{self.where}: unknown bucket parameter bucket.{name}")
                return RequestValue("bucket", name)
            return None
        if (
            not self.stream_functions
            and isinstance(node, ast.ColumnRef)
            and len(fields := _given(node.fields)) == 2
        ):
            first, second = fields
            if isinstance(first, ast.String) and first.sval == "token_parameters":
                key: str = second.sval
                return (
                    RequestValue("user_id")
                    if key == "user_id"
                    else RequestValue("token_parameters", key)
                )
        if not isinstance(node, ast.FuncCall):
            return None
        name = ".".join(s.sval for s in _given(node.funcname))
        args = node.args or ()
        if self.stream_functions:
            if name == "auth.user_id" and not args:
                return RequestValue("user_id")
            if name in ("auth.parameter", "subscription.parameter", "connection.parameter"):
                return RequestValue(name.split(".")[0], self._string_arg(args, name))
        elif name == "request.user_id" and not args:
            return RequestValue("user_id")
        return None

    def _string_arg(self, args: tuple[ast.Node, ...], name: str) -> str:
        if (
            len(args) == 1
            and isinstance(args[0], ast.A_Const)
            and isinstance(args[0].val, ast.String)
        ):
            return _given(args[0].val.sval)
        raise SyncConfigError(f"{self.where}: {name}() takes one string literal")

    def condition(
        self,
        node: ast.Node,
        row_filters: list[RowFilter],
        parameters: list[tuple[RowGetter, RequestValue]],
    ) -> None:
        if isinstance(node, ast.NullTest):
            getter = self.row_expression(_given(node.arg))
            if node.nulltesttype == NullTestType.IS_NULL:
                row_filters.append(lambda row: getter(row) is None)
            else:
                row_filters.append(lambda row: getter(row) is not None)
            return
        if not (
            isinstance(node, ast.A_Expr)
            and node.kind == A_Expr_Kind.AEXPR_OP
            and len(operator := _given(node.name)) == 1
            and operator[0].sval in ("=", "==", "!=", "<>")
        ):
            raise _unsupported(f"{_describe(node)} in WHERE", self.where)
        op = operator[0].sval
        left, right = node.lexpr, node.rexpr
        if not isinstance(left, ast.Node) or not isinstance(right, ast.Node):  # prefix `== x`
            raise _unsupported(f"{_describe(node)} in WHERE", self.where)
        request_left, request_right = self.request_value(left), self.request_value(right)
        if request_left is not None and request_right is not None:
            raise _unsupported("a condition on request values only", self.where)
        request_value, row_node = (
            (request_left, right) if request_left is not None else (request_right, left)
        )
        if request_value is not None:
            if op not in ("=", "=="):
                raise _unsupported(f"operator '{op}' with a request value", self.where)
            parameters.append((self.row_expression(row_node), request_value))
            return
        if isinstance(left, ast.FuncCall) or isinstance(right, ast.FuncCall):
            call = left if isinstance(left, ast.FuncCall) else right
            raise _unsupported(f"{_describe(call)} in WHERE", self.where)
        lhs, rhs = self.row_expression(left), self.row_expression(right)
        if op in ("=", "=="):
            row_filters.append(lambda row: _sql_equal(lhs(row), rhs(row)))
        else:
            row_filters.append(lambda row: _sql_equal(lhs(row), rhs(row)) is False)


def _sql_equal(a: SqliteValue, b: SqliteValue) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    return a == b


def _constant(node: ast.A_Const) -> SqliteValue:
    if node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.String):
        return val.sval
    if isinstance(val, ast.Integer):
        return val.ival
    if isinstance(val, ast.Float):
        return float(_given(val.fval))
    if isinstance(val, ast.Boolean):
        return 1 if val.boolval else 0
    raise SyncConfigError(f"unsupported constant {val!r}")


def _cast_text(value: SqliteValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return js_number(value)
    return str(value)


def _cast_integer(value: SqliteValue) -> int | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        m = re.match(r"^\s*([+\-]?\d+)", value)
        return int(m.group(1)) if m else 0
    if isinstance(value, float):
        return int(value // 1)
    return value


def _cast_real(value: SqliteValue) -> float | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        m = re.match(r"^\s*[+\-]?(\d+\.?\d*|\.\d+)([eE][+\-]?\d+)?", value)
        return float(m.group(0)) if m else 0.0
    return float(value)


def _cast_numeric(value: SqliteValue) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        m = re.match(r"^\s*([+\-]?)(?:(\d+)(\.\d*)?|\.(\d+))([eE][+\-]?\d+)?", value)
        if not m:
            return 0
        if m.group(3) is not None or m.group(4) is not None or m.group(5) is not None:
            return float(m.group(0))
        return int(m.group(1) + m.group(2))
    return value


def _cast_blob(value: SqliteValue) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return (_cast_text(value) or "").encode()


_CASTS: dict[str, Callable[[SqliteValue], SqliteValue]] = {
    "text": _cast_text,
    "integer": _cast_integer,
    "real": _cast_real,
    "numeric": _cast_numeric,
    "blob": _cast_blob,
}
