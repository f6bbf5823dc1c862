"""The `dialer` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import get_settings
from core.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dialer.campaigns import Api


class CommandError(Exception):
    """Nothing was done: one line saying why and what to do, and a non-zero exit."""


def _engine() -> Engine:
    """The engine of an existing, migrated database. A SQLite file that does not exist is not
    created (SQLAlchemy would, empty, and the command would end in `no such table`): the
    usual cause is a shell without the stack's DIALER_DATA_DIR."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from store.db import get_engine

    settings = get_settings()
    url = make_url(settings.db_url)
    where = url.render_as_string(hide_password=True)
    fix = (
        "run `dialer db upgrade` (or `make run`) first, or set DIALER_DATA_DIR "
        "(or DIALER_DATABASE_URL) to the stack's"
    )
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            raise CommandError(f"no database at {url.database}: {fix}")
    engine = get_engine(settings)
    try:
        if not inspect(engine).has_table("users"):
            raise CommandError(f"the database {where} has no tables: {fix}")
    except OperationalError as exc:
        raise CommandError(f"cannot open the database {where}: {exc.orig}") from None
    return engine


def cmd_run(_: argparse.Namespace) -> int:
    from dialer.stack import StackError, run_stack

    try:
        return run_stack(get_settings())
    except StackError as exc:
        raise CommandError(str(exc)) from None


def cmd_api(_: argparse.Namespace) -> int:
    from api.app import create_app
    from api.serve import serve
    from dialer.net import port_open
    from infra.tracing import configure_tracing

    settings = get_settings()
    if port_open(settings.api_port):
        raise CommandError(
            f"port {settings.api_port} is taken: stop what runs there or set DIALER_API_PORT"
        )
    configure_tracing(settings, "dialer-api")
    serve(
        create_app(settings),
        drain_seconds=settings.shutdown_drain_seconds,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        # Keep the handler of core.logs (masking, ids, JSON): uvicorn would install its own.
        log_config=None,
        # The access line is written by infra.metrics.HTTPObservability, with the route
        # template: uvicorn's would hold the raw path and query string, where numbers travel.
        access_log=False,
        # X-Forwarded-* only from the configured proxies (uvicorn trusts loopback otherwise).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or "",
        timeout_graceful_shutdown=settings.api_graceful_shutdown_seconds,
    )
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from worker import run_worker

    asyncio.run(run_worker(get_settings()))
    return 0


def cmd_worker_health(_: argparse.Namespace) -> int:
    from infra.health import worker_health_problem

    problem = worker_health_problem(get_settings())
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    sys.stdout.write("healthy\n")
    return 0


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    from store.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    from store import crud

    user = crud.create_user(engine=_engine(), email=args.email)
    sys.stdout.write(f"{user.id}\n")
    return 0


# A limit option not given: the limit stays as it is.
_KEEP: Any = object()


def _limit(kind: type[int] | type[float]) -> Any:
    """A limit's value on the command line: a positive number, or `none` to remove it."""

    def parse(text: str) -> int | float | None:
        if text.strip().lower() == "none":
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number (or none): {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0 (or none): {text!r}")
        return value

    return parse


def cmd_users_limits(args: argparse.Namespace) -> int:
    from store import accounts, crud

    engine = _engine()
    user = crud.get_user(engine=engine, email=args.user)
    given = {
        name: getattr(args, name)
        for name in ("max_concurrent_calls", "max_calls_per_second", "fairness_weight")
        if getattr(args, name) is not _KEEP
    }
    limits = accounts.set_limits(engine, user.id, **given)
    for name, value in asdict(limits).items():
        sys.stdout.write(f"{name}: {'none' if value is None else value}\n")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from store import crud

    engine = _engine()
    user = crud.get_user(engine=engine, email=args.user)
    # Only the key goes to stdout, so scripts can capture it: KEY=$(dialer keys create ...)
    sys.stdout.write(crud.create_key(engine=engine, user=user, secret=get_settings().secret_key))
    sys.stdout.write("\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from store import crud

    engine = _engine()
    user = crud.get_user(engine=engine, email=args.user)
    count = crud.revoke_keys(engine=engine, user=user, prefix=args.prefix)
    if count == 0:
        which = f"with prefix {args.prefix}" if args.prefix else "at all"
        raise CommandError(
            f"{args.user} has no active key {which}: nothing revoked "
            f"(`dialer keys list --user {args.user}` shows the prefixes)"
        )
    sys.stderr.write(f"revoked {count} key(s)\n")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from store import crud

    engine = _engine()
    user = crud.get_user(engine=engine, email=args.user)
    sys.stdout.write("prefix    created_at                 revoked_at\n")
    for key in crud.list_keys(engine=engine, user=user):
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        created = key.created_at.isoformat(timespec="seconds")
        sys.stdout.write(f"{key.prefix}  {created:<25}  {revoked}\n")
    return 0


def cmd_lines_confirm(args: argparse.Namespace) -> int:
    from services.lines import CarrierUnavailable, LineConfirmer, NumberNotOwned
    from store import crud

    # The carrier's answers are the command's output: its log lines would only repeat them.
    for name in ("telephony", "services.lines", "twilio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    engine = _engine()
    user_id = crud.get_user(engine=engine, email=args.user).id if args.user else None
    confirmer = LineConfirmer.from_settings(get_settings())
    # Only lines the carrier that dials them has not confirmed yet (after the upgrade to
    # migration 0008, or a change of DIALER_TELEPHONY_PROVIDER).
    pending = [
        (line, email)
        for line, email in crud.list_lines(engine=engine, user_id=user_id)
        if line.confirmed_by != confirmer.carrier_for(line.provider)
    ]

    async def confirm_all() -> tuple[int, int]:
        confirmed = refused = 0
        for line, email in pending:
            try:
                carrier = await confirmer.confirm(line.number, line.provider)
            except NumberNotOwned:
                refused += 1
                sys.stdout.write(
                    f"{line.number}  {email}  not confirmed: neither an incoming number nor "
                    "a verified caller id of the carrier account (it cannot dial)\n"
                )
                continue
            except CarrierUnavailable:
                raise CommandError(
                    f"the carrier could not be asked about {line.number}: {confirmed} line(s) "
                    "confirmed so far; run the command again"
                ) from None
            crud.confirm_line(engine=engine, line_id=line.id, carrier=carrier)
            confirmed += 1
            sys.stdout.write(f"{line.number}  {email}  confirmed by {carrier}\n")
        return confirmed, refused

    confirmed, refused = asyncio.run(confirm_all())
    if refused:
        raise CommandError(
            f"{refused} line(s) not confirmed ({confirmed} confirmed): buy or verify their "
            "numbers in the carrier account, then run the command again"
        )
    sys.stderr.write(f"{confirmed} line(s) confirmed, none left unconfirmed\n")
    return 0


def cmd_demo_seed(_: argparse.Namespace) -> int:
    from dialer.stack import demo_key

    _engine()  # an existing, migrated database, or one line saying so
    sys.stdout.write(demo_key(get_settings()) + "\n")
    return 0


def _api(args: argparse.Namespace) -> Api:
    from dialer.campaigns import Api, ApiProblem

    try:
        return Api.from_args(get_settings(), args.api, args.key)
    except ApiProblem as exc:
        raise CommandError(str(exc)) from None


def cmd_campaigns_create(args: argparse.Namespace) -> int:
    from dialer.campaigns import ApiProblem, create_from_csv

    try:
        return create_from_csv(
            _api(args),
            csv_path=Path(args.csv),
            name=args.name,
            agent_id=args.agent_id,
            workflow_id=args.workflow_id,
            phone_number_id=args.phone_number_id,
            options=args.options,
            out=sys.stdout,
        )
    except ApiProblem as exc:
        raise CommandError(str(exc)) from None


def cmd_campaigns_watch(args: argparse.Namespace) -> int:
    from dialer.campaigns import ApiProblem, watch

    try:
        return watch(_api(args), args.campaign_id, interval=args.interval, out=sys.stdout)
    except ApiProblem as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", help="the API's base URL (default http://127.0.0.1:<port>)")
    parser.add_argument(
        "--key",
        default=os.environ.get("DIALER_API_KEY"),
        help="an API key (default: DIALER_API_KEY, else the embedded stack's demo key)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the whole embedded stack (what `make run` calls)").set_defaults(
        func=cmd_run
    )
    sub.add_parser("api", help="the HTTP API").set_defaults(func=cmd_api)
    sub.add_parser("worker", help="the Temporal worker").set_defaults(func=cmd_worker)
    sub.add_parser(
        "worker-health",
        help="exit 0 when the worker on this host polls (a container health check)",
    ).set_defaults(func=cmd_worker_health)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    users = sub.add_parser("users", help="users").add_subparsers(dest="users", required=True)
    create = users.add_parser("create", help="create a user; prints its id")
    create.add_argument("--email", required=True)
    create.set_defaults(func=cmd_users_create)
    ul = users.add_parser(
        "limits",
        help="show or set a user's limits (`none` removes one); prints them",
        description="Per-account limits, held across every API and worker process: calls "
        "dialing, ringing or in progress at once, dials per second, and the account's weight "
        "on the dial queue (Task Queue Fairness, default 1.0).",
    )
    ul.add_argument("--user", required=True, metavar="EMAIL")
    ul.add_argument("--max-concurrent-calls", type=_limit(int), default=_KEEP, metavar="N")
    ul.add_argument("--max-calls-per-second", type=_limit(float), default=_KEEP, metavar="X")
    ul.add_argument("--fairness-weight", type=_limit(float), default=_KEEP, metavar="W")
    ul.set_defaults(func=cmd_users_limits)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    kc = keys.add_parser("create", help="create a key; prints only the key")
    kc.add_argument("--user", required=True, metavar="EMAIL")
    kc.set_defaults(func=cmd_keys_create)
    kr = keys.add_parser("revoke", help="revoke a user's keys (or one, by prefix)")
    kr.add_argument("--user", required=True, metavar="EMAIL")
    kr.add_argument("--prefix")
    kr.set_defaults(func=cmd_keys_revoke)
    kl = keys.add_parser("list", help="a user's keys: prefix, created and revoked times")
    kl.add_argument("--user", required=True, metavar="EMAIL")
    kl.set_defaults(func=cmd_keys_list)

    lines = sub.add_parser("lines", help="caller lines").add_subparsers(dest="lines", required=True)
    lc = lines.add_parser(
        "confirm",
        help="ask the carrier about every line it has not confirmed; prints one line each",
        description="With Twilio a caller line dials only once Twilio confirmed its number as "
        "one of the account's incoming numbers or verified caller ids. Lines added before "
        "that check (or before a change of DIALER_TELEPHONY_PROVIDER) are confirmed here, for "
        "one user or for every account; exits non-zero if any is not the account's.",
    )
    lc.add_argument("--user", metavar="EMAIL", help="only this user's lines (default: all)")
    lc.set_defaults(func=cmd_lines_confirm)

    campaigns = sub.add_parser("campaigns", help="campaigns, through the API").add_subparsers(
        dest="campaigns", required=True
    )
    cc = campaigns.add_parser(
        "create", help="create a campaign from a CSV file; shows accepted, skipped, rejected rows"
    )
    cc.add_argument("--csv", required=True, metavar="FILE", help="a phone_number column")
    cc.add_argument("--name", required=True, help="the campaign's name (batch_name)")
    target = cc.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent-id")
    target.add_argument("--workflow-id")
    cc.add_argument("--phone-number-id")
    cc.add_argument("--options", metavar="JSON", help="e.g. '{\"calls_per_second\": 5}'")
    _api_options(cc)
    cc.set_defaults(func=cmd_campaigns_create)
    cw = campaigns.add_parser(
        "watch", help="a campaign's live progress: counts per state, dial rate; ends with it"
    )
    cw.add_argument("campaign_id")
    cw.add_argument("--interval", type=float, default=1.0, help="seconds between reads")
    _api_options(cw)
    cw.set_defaults(func=cmd_campaigns_watch)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="demo", required=True)
    demo.add_parser("seed", help="seed the demo account; prints its API key").set_defaults(
        func=cmd_demo_seed
    )
    return parser


# Commands that start something long-lived or change the schema: in production they refuse
# to run on an unsafe configuration (see Settings.problems).
GUARDED = frozenset({cmd_run, cmd_api, cmd_worker, cmd_db_upgrade})


def _refuse(title: str, problems: list[str]) -> int:
    sys.stderr.write(f"dialer: {title}:\n" + "".join(f"  - {p}\n" for p in problems))
    return 2


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        # One line per bad variable instead of pydantic's traceback.
        return _refuse(
            "the configuration cannot be read",
            [
                f"DIALER_{'_'.join(str(part) for part in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            ],
        )
    problems = settings.problems()
    if problems and args.func in GUARDED:
        return _refuse("refusing to start in production", problems)
    configure_logging(get_settings())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except CommandError as exc:
        sys.stderr.write(f"dialer: {exc}\n")
        return 1
    except (ValueError, LookupError) as exc:
        sys.stderr.write(f"dialer: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
