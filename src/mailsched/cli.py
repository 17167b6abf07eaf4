"""The ``mailsched`` command. The only place that configures logging."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched import __version__, logs, processes
from mailsched.config import Settings
from mailsched.errors import ConfigError, MailschedError
from mailsched.mail import keygen
from mailsched.mail.message import sender_domain
from mailsched.serve import Role, serve
from mailsched.store import keys
from mailsched.store.db import Database
from mailsched.store.migrate import upgrade

log = logging.getLogger("mailsched")

_ROLES = {
    "run": frozenset(Role),
    "api": frozenset({Role.API, Role.DISPATCHER}),
    "worker": frozenset({Role.WORKER}),
    "dispatcher": frozenset({Role.DISPATCHER}),
    "webhooks": frozenset({Role.WEBHOOKS}),
    "inbound": frozenset({Role.INBOUND}),
}
#: Roles that need only the database: they may run beside `mailsched run` on SQLite.
_DATABASE_ONLY = frozenset({"inbound"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailsched", description="Email campaign scheduler. Settings: MAILSCHED_* variables."
    )
    parser.add_argument("--version", action="version", version=f"mailsched {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run",
        help="everything in one process: API, dispatcher, a worker, webhooks and, with "
        "MAILSCHED_BOUNCE_ADDRESS, the bounce mailbox",
    )
    commands.add_parser("api", help="the producer: REST API and dispatcher (needs Kafka)")
    worker = commands.add_parser(
        "worker", help="the consumer: claims, sends and records (needs Kafka)"
    )
    worker.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="run N worker processes under this one (one per core); default 1",
    )
    commands.add_parser("dispatcher", help="only the dispatcher (needs Kafka)")
    commands.add_parser(
        "webhooks", help="reads the events topic and delivers webhooks (needs Kafka)"
    )
    commands.add_parser(
        "inbound",
        help="the bounce mailbox's SMTP server (needs MAILSCHED_BOUNCE_ADDRESS)",
    )
    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_commands.add_parser("upgrade", help="migrate the schema to the newest revision")
    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create = key_commands.add_parser("create", help="make a key; it is printed once, last")
    create.add_argument("--user-id", type=int, required=True, help="the user the key acts for")
    create.add_argument("--name", help="a note to recognise the key by")
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="the key, its prefix (the part after ms_), or its id")
    dkim = commands.add_parser("dkim", help="DKIM signing keys")
    dkim_commands = dkim.add_subparsers(dest="dkim_command", required=True, metavar="DKIM_COMMAND")
    keygen = dkim_commands.add_parser(
        "keygen", help="write a new private key and print the DNS TXT record that publishes it"
    )
    keygen.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    keygen.add_argument("--selector", help="default: MAILSCHED_DKIM_SELECTOR, else 'mailsched'")
    keygen.add_argument("--domain", help="default: MAILSCHED_DKIM_DOMAIN, else the From domain")
    keygen.add_argument(
        "--out", type=Path, help="the key file to write (0600); default: MAILSCHED_DKIM_KEY_FILE"
    )
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError("a whole number from 1 to 256")
    return int(text)


def _dkim_keygen(settings: Settings, args: argparse.Namespace) -> int:
    out = args.out or settings.dkim_key_file
    if out is None:
        print("mailsched: give --out or set MAILSCHED_DKIM_KEY_FILE", file=sys.stderr)
        return 2
    selector = args.selector or settings.dkim_selector or "mailsched"
    domain = args.domain or settings.dkim_domain or sender_domain(settings.from_)
    try:
        record = keygen.write_key(out, args.algorithm)
    except FileExistsError:
        print(f"mailsched: {out} exists; not overwritten", file=sys.stderr)
        return 1
    print(f"Private key written to {out}. Publish this DNS TXT record:")
    print(keygen.txt_record(selector, domain, record))
    return 0


async def _db_upgrade(settings: Settings) -> None:
    db = Database.from_url(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    db = Database.from_url(settings.database_url)
    try:
        await upgrade(db)
        now = datetime.now(UTC)
        if args.keys_command == "create":
            if args.user_id < 1:
                print("mailsched: --user-id must be at least 1", file=sys.stderr)
                return 2

            async def create(conn: AsyncConnection) -> tuple[int, str]:
                return await keys.create_key(conn, args.user_id, args.name, now)

            key_id, key = await db.run(create)
            print(f"API key {key_id} for user {args.user_id}; it is shown only this once:")
            print(key)
            return 0

        async def revoke(conn: AsyncConnection) -> bool:
            return await keys.revoke_key(conn, args.key, now)

        if not await db.run(revoke):
            print("mailsched: no such live key", file=sys.stderr)
            return 1
        print("revoked")
        return 0
    finally:
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailsched`` console script."""
    args = _parser().parse_args(argv)
    try:
        # keygen makes the key that MAILSCHED_DKIM_KEY_FILE will name: it may not exist yet.
        settings = Settings.load(check_dkim=args.command != "dkim")
    except ConfigError as exc:
        print(f"mailsched: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    # aiosmtpd logs every envelope's addresses at INFO; ours log ids and counts.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    needs_kafka = args.command in _ROLES and args.command not in {"run", *_DATABASE_ONLY}
    if needs_kafka and settings.kafka() is None:
        print(
            f"mailsched: `mailsched {args.command}` runs beside other processes and needs "
            "MAILSCHED_KAFKA_BOOTSTRAP_SERVERS; for one process, use `mailsched run`",
            file=sys.stderr,
        )
        return 2
    try:
        if args.command == "db":
            asyncio.run(_db_upgrade(settings))
            log.info("database schema is up to date")
        elif args.command == "dkim":
            return _dkim_keygen(settings, args)
        elif args.command == "keys":
            return asyncio.run(_keys(settings, args))
        elif args.command == "worker" and args.processes > 1:
            # The children stop within their own grace; a little more for their exit.
            grace = settings.shutdown_grace_seconds + 15
            return processes.supervise(args.processes, settings.metrics_port, grace)
        else:
            asyncio.run(serve(settings, _ROLES[args.command]))
    except MailschedError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
