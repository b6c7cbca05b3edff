"""Run as `python -m tests.client.refresher ROUNDS`: refreshes the device's stored session
ROUNDS times in a row (the device named by PAPYRUS_CLIENT_DIR), after printing `ready` and
reading one line from standard input, so that a test can start several at the same instant."""

from __future__ import annotations

import sys

from papyrus.client import AuthApiClient, AuthRepository, PapyrusApiConfig, TokenStore


def main() -> None:
    rounds = int(sys.argv[1])
    config = PapyrusApiConfig.from_environment()
    repo = AuthRepository(AuthApiClient(config.api_url), TokenStore.for_config(config))
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(rounds):
        repo.refresh()
    user = repo.me()
    print(f"refreshed {rounds} times as {user.email}", flush=True)


if __name__ == "__main__":
    main()
