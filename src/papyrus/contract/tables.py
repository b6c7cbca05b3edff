"""Every synced table of the reading library, declared once, parents before children.

The order of `TABLES` is the order uploads are applied in: a table only references tables
declared before it (or itself), so inserting in this order and deleting in reverse never
violates a reference. Adding an entity is one declaration here plus one reviewed migration;
the tests say what else must follow.
"""

from __future__ import annotations

from papyrus.contract.declare import (
    Before,
    Column,
    Index,
    JsonObject,
    Location,
    OnDelete,
    Stamp,
    StringList,
    Table,
    Type,
    Unique,
)

INT4_MAX = 2**31 - 1
TITLE_MAX = 500
SHORT_TEXT_MAX = 500
DESCRIPTION_MAX = 20_000
NOTE_MAX = 100_000
ISBN_MAX = 32
LANGUAGE_MAX = 35  # the longest well-formed BCP 47 tags
URL_MAX = 2048
CFI_MAX = 4096
LABEL_MAX = 200
NAME_MAX = 200
HIGHLIGHT_MAX = 10_000

READING_STATUSES = ("not_started", "reading", "finished", "abandoned")
HIGHLIGHT_COLORS = ("yellow", "green", "blue", "pink", "purple", "orange")
GOAL_KINDS = ("books", "pages", "minutes")
GOAL_PERIODS = ("year", "month", "week")
HEX_COLOR = r"#[0-9a-fA-F]{6}"


def _text(name: str, max_length: int, *, required: bool = False, doc: str = "") -> Column:
    low = 1 if required else 0
    return Column(name, Type.TEXT, required=required, length=(low, max_length), doc=doc)


def _color(name: str = "color") -> Column:
    return Column(name, Type.TEXT, length=(7, 7), pattern=HEX_COLOR, doc="#rrggbb")


def _ref(
    name: str,
    table: str,
    *,
    required: bool = True,
    on_delete: OnDelete = OnDelete.CASCADE,
    immutable: bool = False,
) -> Column:
    return Column(
        name,
        Type.ID,
        required=required,
        references=table,
        on_delete=on_delete,
        immutable=immutable,
    )


def _stamps(created: str = "created_at") -> tuple[Column, Column]:
    return (
        Column(created, Type.TIMESTAMP, stamp=Stamp.CREATED),
        Column("updated_at", Type.TIMESTAMP, stamp=Stamp.UPDATED),
    )


SERIES = Table(
    "series",
    "A series of books (a trilogy, a saga).",
    (
        _text("name", TITLE_MAX, required=True),
        _text("author", SHORT_TEXT_MAX),
        _text("description", DESCRIPTION_MAX),
        Column("total_books", Type.INTEGER, range=(0, 10_000)),
        *_stamps(),
    ),
    indexes=(Index("by_name", ("name",)),),
)

BOOKS = Table(
    "books",
    "A book in the reader's library, with where they are in it.",
    (
        _text("title", TITLE_MAX, required=True),
        _text("subtitle", SHORT_TEXT_MAX),
        _text("author", SHORT_TEXT_MAX),
        Column("co_authors", Type.JSON, json=StringList(100, SHORT_TEXT_MAX)),
        _text("isbn", ISBN_MAX),
        _text("isbn13", ISBN_MAX),
        _text("publisher", SHORT_TEXT_MAX),
        _text("language", LANGUAGE_MAX),
        Column("page_count", Type.INTEGER, range=(0, INT4_MAX)),
        _text("description", DESCRIPTION_MAX),
        _text("cover_image_url", URL_MAX),
        Column("reading_status", Type.TEXT, choices=READING_STATUSES),
        Column("current_page", Type.INTEGER, range=(0, INT4_MAX)),
        Column("current_position", Type.REAL, range=(0.0, 1.0), doc="fraction of the book"),
        _text("current_cfi", CFI_MAX),
        Column("is_favorite", Type.BOOLEAN, required=True, default=False),
        Column("rating", Type.INTEGER, range=(1, 5)),
        Column("custom_metadata", Type.JSON, json=JsonObject(16 * 1024)),
        _ref("series_id", "series", required=False, on_delete=OnDelete.SET_NULL),
        Column("series_number", Type.REAL, range=(0.0, 100_000.0)),
        Column("started_at", Type.TIMESTAMP),
        Column("finished_at", Type.TIMESTAMP),
        Column("last_read_at", Type.TIMESTAMP),
        *_stamps(created="added_at"),
    ),
    checks=(Before("started_at", "finished_at"),),
    indexes=(
        Index("by_title", ("title",)),
        Index("by_updated", ("updated_at",)),
        Index("by_series", ("series_id",)),
    ),
)

SHELVES = Table(
    "shelves",
    "A named shelf; shelves nest (a shelf may sit on a parent shelf).",
    (
        _text("name", NAME_MAX, required=True),
        _text("description", 2_000),
        _color(),
        _ref("parent_shelf_id", "shelves", required=False, on_delete=OnDelete.SET_NULL),
        Column("sort_order", Type.INTEGER, range=(-INT4_MAX, INT4_MAX)),
        *_stamps(),
    ),
    acyclic="parent_shelf_id",
    indexes=(Index("by_parent", ("parent_shelf_id",)),),
)

TAGS = Table(
    "tags",
    "A label for books; names are unique per reader, ignoring case.",
    (_text("name", 100, required=True), _color(), *_stamps()),
    unique=(Unique(("name",), case_insensitive=True, name="tags_name_unique"),),
    indexes=(Index("by_name", ("name",)),),
)

BOOK_SHELVES = Table(
    "book_shelves",
    "A book on a shelf. The id is `<book_id>:<shelf_id>`, so offline adds converge.",
    (
        _ref("book_id", "books", immutable=True),
        _ref("shelf_id", "shelves", immutable=True),
        Column("sort_order", Type.INTEGER, range=(-INT4_MAX, INT4_MAX)),
        Column("added_at", Type.TIMESTAMP, stamp=Stamp.CREATED),
    ),
    id_from=("book_id", "shelf_id"),
    indexes=(Index("by_book", ("book_id",)), Index("by_shelf", ("shelf_id",))),
)

BOOK_TAGS = Table(
    "book_tags",
    "A tag on a book. The id is `<book_id>:<tag_id>`, so offline adds converge.",
    (
        _ref("book_id", "books", immutable=True),
        _ref("tag_id", "tags", immutable=True),
        Column("added_at", Type.TIMESTAMP, stamp=Stamp.CREATED),
    ),
    id_from=("book_id", "tag_id"),
    indexes=(Index("by_book", ("book_id",)), Index("by_tag", ("tag_id",))),
)

ANNOTATIONS = Table(
    "annotations",
    "A highlight: selected text at a location, in a colour, with an optional note.",
    (
        _ref("book_id", "books", immutable=True),
        _text("selected_text", HIGHLIGHT_MAX, required=True),
        Column("color", Type.TEXT, required=True, default="yellow", choices=HIGHLIGHT_COLORS),
        Column("location", Type.JSON, required=True, json=Location(CFI_MAX)),
        _text("note", DESCRIPTION_MAX),
        *_stamps(),
    ),
    indexes=(Index("by_book", ("book_id",)),),
)

NOTES = Table(
    "notes",
    "A note, about a book (and a place in it) or free-standing.",
    (
        _ref("book_id", "books", required=False),
        _text("title", TITLE_MAX),
        _text("content", NOTE_MAX),
        Column("location", Type.JSON, json=Location(CFI_MAX)),
        Column("pinned", Type.BOOLEAN, required=True, default=False),
        *_stamps(),
    ),
    indexes=(Index("by_book", ("book_id",)), Index("by_updated", ("updated_at",))),
)

BOOKMARKS = Table(
    "bookmarks",
    "A saved place in a book.",
    (
        _ref("book_id", "books", immutable=True),
        Column("location", Type.JSON, required=True, json=Location(CFI_MAX)),
        _text("label", LABEL_MAX),
        *_stamps(),
    ),
    indexes=(Index("by_book", ("book_id",)),),
)

READING_SESSIONS = Table(
    "reading_sessions",
    "One stretch of reading. Append-only history: once ended, clients cannot change or delete it.",
    (
        _ref("book_id", "books", immutable=True),
        Column("started_at", Type.TIMESTAMP, required=True, immutable=True),
        Column("ended_at", Type.TIMESTAMP),
        Column("start_position", Type.REAL, range=(0.0, 1.0)),
        Column("end_position", Type.REAL, range=(0.0, 1.0)),
        Column("pages_read", Type.INTEGER, range=(0, 100_000)),
        _text("device_label", 100),
        Column("created_at", Type.TIMESTAMP, stamp=Stamp.CREATED),
    ),
    checks=(Before("started_at", "ended_at"),),
    closed_by="ended_at",
    indexes=(Index("by_book", ("book_id",)), Index("by_started", ("started_at",))),
)

READING_GOALS = Table(
    "reading_goals",
    "A target for a period (books, pages or minutes per year, month or week). Progress is "
    "computed from sessions and finished books, never stored.",
    (
        Column("kind", Type.TEXT, required=True, choices=GOAL_KINDS),
        Column("target", Type.INTEGER, required=True, range=(1, 1_000_000)),
        Column("period", Type.TEXT, required=True, choices=GOAL_PERIODS),
        Column("period_start", Type.DATE, required=True),
        Column("active", Type.BOOLEAN, required=True, default=True),
        *_stamps(),
    ),
)

TABLES: tuple[Table, ...] = (
    SERIES,
    BOOKS,
    SHELVES,
    TAGS,
    BOOK_SHELVES,
    BOOK_TAGS,
    ANNOTATIONS,
    NOTES,
    BOOKMARKS,
    READING_SESSIONS,
    READING_GOALS,
)
"""Every synced table, in apply order (parents first)."""
