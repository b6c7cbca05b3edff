"""Development sync service: the PowerSync protocol over this project's PostgreSQL.

Real PowerSync SDKs connect to it as to the PowerSync service. Not meant for production scale.
Import what you need from its modules (`papyrus.devsync.service`, `.config`, ...): this package
root imports nothing, so `papyrus sync-service` can say which extra to install when the
server's dependencies are missing.
"""
