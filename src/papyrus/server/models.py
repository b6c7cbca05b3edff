"""Every ORM model module, imported so Alembic and tests see the whole schema."""


def import_all_models() -> None:
    from papyrus.server.accounts import models as _accounts  # noqa: F401
    from papyrus.server.lifecycle import models as _lifecycle  # noqa: F401
    from papyrus.server.mail import models as _mail  # noqa: F401
    from papyrus.server.oauth import models as _oauth  # noqa: F401
    from papyrus.server.sync import models as _sync  # noqa: F401
