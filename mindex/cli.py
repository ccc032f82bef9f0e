"""`mindex`: what Dagster's CLI does not do: run the main job, replay recorded APIs, run the stream collectors,
print the platform's status, and run the failover drill."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def load_dotenv_file() -> None:
    """Read ./.env like Dagster's CLI does, but never over a variable the shell already exports."""
    from dotenv import load_dotenv

    from mycosoft_assets.settings import REPO_ROOT

    for candidate in (Path.cwd() / ".env", REPO_ROOT / ".env"):
        if candidate.is_file():
            load_dotenv(candidate, override=False)
            return


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load_dotenv_file()
    parser = argparse.ArgumentParser(prog="mindex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("replay", help="serve recorded API responses on loopback, with fault injection",
                   add_help=False)
    sub.add_parser("collect", help="run a stream collector (opensky | aisstream) that lands data in the spool",
                   add_help=False)
    sub.add_parser("status", help="one line per asset: freshness, last update, served from live or cache, "
                                  "cached age, last error")
    drill_help = ("failover drill: real dagster-daemon, replay server, sources switched down and back; prints "
                  "failover and healing times")
    drill = sub.add_parser("drill", help=drill_help, description=drill_help.capitalize() + ".")
    drill.add_argument("--source", action="append", dest="sources",
                       metavar="SOURCE",
                       help="drill only this source (repeat for several: --source gbif --source openaq); default: "
                            "each API source, then all at once")
    drill.add_argument("--replay-dir", default=os.environ.get("MINDEX_REPLAY_DIR") or None,
                       help="recorded responses to serve (default: $MINDEX_REPLAY_DIR or ../shared/fixtures)")
    drill.add_argument("--keep", action="store_true", help="keep the drill's temporary instance and data")
    run = sub.add_parser("run", help="the main job: sync every source into MINDEX (what `make run` does)")
    run.add_argument("--replay-dir", default=os.environ.get("MINDEX_REPLAY_DIR") or None,
                     help="serve these recorded responses on loopback and run against them "
                          "(default: $MINDEX_REPLAY_DIR; unset = the real APIs)")
    if argv and argv[0] == "replay":
        from mindex.replay.cli import main as replay_main

        return replay_main(argv[1:])
    if argv and argv[0] == "collect":
        return collect(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "status":
        from mindex.status import print_status

        return print_status()
    if args.command == "drill":
        from mindex.drill import drill_main

        return drill_main(args.sources, args.replay_dir, keep=args.keep)
    if args.command == "run":
        from mindex.run import run_main_job

        return run_main_job(args.replay_dir)
    parser.error(f"unknown command {args.command}")
    return 2


COLLECTORS = {"opensky": "mindex.collectors.opensky", "aisstream": "mindex.collectors.aisstream"}


def collect(argv: list[str]) -> int:
    """``mindex collect <source> [options]``: the long-running collector of a stream source."""
    import importlib

    if not argv or argv[0] not in COLLECTORS:
        print(f"usage: mindex collect {{{','.join(COLLECTORS)}}} [--help]", file=sys.stderr)
        return 2
    return importlib.import_module(COLLECTORS[argv[0]]).collect_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
