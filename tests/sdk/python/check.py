"""The Python SDK's default credential chain, fetching through the agent's loopback listener.

Run by tests/e2e/tests/sdk.rs with exactly the environment `ecs-credential-agent env` prints
(plus PATH and an empty HOME): no configuration in code. Usage: `check.py sync|async`.

Protocol (one line each way, so the test can read the agent's socket around every fetch):
prints `ready <alibabacloud-credentials version>`, then for each `fetch` line on stdin asks the
one `Client()` it made for its credential and prints it as one JSON line
(AccessKeyId, AccessKeySecret, SecurityToken, ProviderName); on an exception prints
`{"Error": "<type>: <message>"}` and keeps going. Ends at end of input.

The same client answers every fetch, so a rotation is seen only if its cache lets it through:
alibabacloud-credentials 1.0.12 treats credentials with less than 15 minutes left as stale
(`RefreshCachedSupplier.STALE_TIME = 15 * 60`, provider/refreshable.py; `_get_stale_time` in
provider/uri.py) and fetches again on the next call, so with the test's short-lived credentials
every fetch is a request to the listener.
"""

import asyncio
import importlib.metadata
import json
import sys

from alibabacloud_credentials.client import Client


def as_line(credential):
    return json.dumps({
        "AccessKeyId": credential.access_key_id,
        "AccessKeySecret": credential.access_key_secret,
        "SecurityToken": credential.security_token,
        "ProviderName": credential.provider_name,
    })


def error_line(exc):
    return json.dumps({"Error": f"{type(exc).__name__}: {exc}"})


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_sync(client):
    for command in sys.stdin:
        if command.strip() != "fetch":
            continue
        try:
            say(as_line(client.get_credential()))
        except Exception as exc:  # reported to the test, which fails with it
            say(error_line(exc))


async def run_async(client):
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, sys.stdin.readline)
        if command == "":
            return
        if command.strip() != "fetch":
            continue
        try:
            say(as_line(await client.get_credential_async()))
        except Exception as exc:  # reported to the test, which fails with it
            say(error_line(exc))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("sync", "async"):
        sys.exit("usage: check.py sync|async")
    # No config: the default credential chain, configured by the environment alone.
    client = Client()
    say("ready " + importlib.metadata.version("alibabacloud-credentials"))
    if mode == "sync":
        run_sync(client)
    else:
        asyncio.run(run_async(client))


if __name__ == "__main__":
    main()
