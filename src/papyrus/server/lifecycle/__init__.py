"""The account lifecycle: proving the address, forgotten and changed passwords, a changed
address, deleting the account and exporting everything held about it (docs/account-lifecycle.md).
"""
