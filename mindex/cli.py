"""`mindex`: replay, run, and (as later issues add them) status, backup, restore, drill, search, metrics."""

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
    run = sub.add_parser("run", help="the main job: sync every source into MINDEX (what `make run` does)")
    run.add_argument("--replay-dir", default=os.environ.get("MINDEX_REPLAY_DIR") or None,
                     help="serve these recorded responses on loopback and run against them "
                          "(default: $MINDEX_REPLAY_DIR; unset = the real APIs)")
    if argv and argv[0] == "replay":
        from mindex.replay.cli import main as replay_main

        return replay_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "run":
        from mindex.run import run_main_job

        return run_main_job(args.replay_dir)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
