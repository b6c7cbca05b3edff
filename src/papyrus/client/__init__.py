"""The Papyrus client: accounts, the local library and PowerSync sync, for Python apps.

A typical app::

    config = PapyrusApiConfig.from_environment()
    with AuthProvider(config) as app:
        app.bootstrap()                       # restores a stored session, connects sync
        if app.state is AuthState.SIGNED_OUT:
            app.sign_in("me@example.com", "secret")
        dune = app.library.add("Dune", author="Frank Herbert")
        shelf = app.library.shelves.add(name="To read")
        app.library.add_to_shelf(dune, shelf)
        app.library.record_progress(dune, page=42)

`papyrus.client` never imports the server or the development sync service.
"""

from papyrus.client.auth import (
    AuthApiClient,
    AuthRepository,
    LoopbackReceiver,
    PowerSyncToken,
    Rejection,
    TokenResponse,
    UploadResult,
    User,
)
from papyrus.client.books import (
    Book,
    BookFilter,
    BookRepository,
    BookSort,
    DataStore,
    ReadingStatus,
)
from papyrus.client.config import PapyrusApiConfig
from papyrus.client.connector import BackendConnector, Credentials, PapyrusConnector
from papyrus.client.crud import CrudBatch, CrudEntry, CrudTransaction, UpdateType
from papyrus.client.database import AsyncWatch, PowerSyncDatabase, UploadQueueStats, Watch
from papyrus.client.errors import (
    AccountDeletedError,
    ApiError,
    ConfigurationError,
    CoreExtensionError,
    LocalDatabaseError,
    NotFoundError,
    OfflineModeError,
    PapyrusClientError,
    PendingChangesError,
    SignedOutError,
    SignInError,
    SyncBusyError,
    TransactionTooLargeError,
    TransientError,
)
from papyrus.client.goals import GoalProgress
from papyrus.client.library import GoalRepository, Library, MembershipRepository, Progress
from papyrus.client.provider import (
    AccountDeletion,
    AuthProvider,
    AuthState,
    PowerSyncService,
    SignOutResult,
    SyncResult,
)
from papyrus.client.records import (
    RECORDS,
    Bookmark,
    BookShelf,
    BookTag,
    Highlight,
    Note,
    ReadingGoal,
    ReadingSession,
    Record,
    Series,
    Shelf,
    Tag,
)
from papyrus.client.repository import Batch, Query, Repository
from papyrus.client.schema import ACCOUNT_SCHEMA, GUEST_SCHEMA, Column, Index, Schema, Table
from papyrus.client.sync import SyncOptions, SyncProgress, SyncStatus
from papyrus.client.tokens import FileBackend, KeyringBackend, TokenStore
from papyrus.client.validation import ValidationError

__all__ = [
    "ACCOUNT_SCHEMA",
    "GUEST_SCHEMA",
    "RECORDS",
    "AccountDeletedError",
    "AccountDeletion",
    "ApiError",
    "AsyncWatch",
    "AuthApiClient",
    "AuthProvider",
    "AuthRepository",
    "AuthState",
    "BackendConnector",
    "Batch",
    "Book",
    "BookFilter",
    "BookRepository",
    "BookShelf",
    "BookSort",
    "BookTag",
    "Bookmark",
    "Column",
    "ConfigurationError",
    "CoreExtensionError",
    "Credentials",
    "CrudBatch",
    "CrudEntry",
    "CrudTransaction",
    "DataStore",
    "FileBackend",
    "GoalProgress",
    "GoalRepository",
    "Highlight",
    "Index",
    "KeyringBackend",
    "Library",
    "LocalDatabaseError",
    "LoopbackReceiver",
    "MembershipRepository",
    "NotFoundError",
    "Note",
    "OfflineModeError",
    "PapyrusApiConfig",
    "PapyrusClientError",
    "PapyrusConnector",
    "PendingChangesError",
    "PowerSyncDatabase",
    "PowerSyncService",
    "PowerSyncToken",
    "Progress",
    "Query",
    "ReadingGoal",
    "ReadingSession",
    "ReadingStatus",
    "Record",
    "Rejection",
    "Repository",
    "Schema",
    "Series",
    "Shelf",
    "SignInError",
    "SignOutResult",
    "SignedOutError",
    "SyncBusyError",
    "SyncOptions",
    "SyncProgress",
    "SyncResult",
    "SyncStatus",
    "Table",
    "Tag",
    "TokenResponse",
    "TokenStore",
    "TransactionTooLargeError",
    "TransientError",
    "UpdateType",
    "UploadQueueStats",
    "UploadResult",
    "User",
    "ValidationError",
    "Watch",
]
