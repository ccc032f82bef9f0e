"""``mindex replay``: serve the recorded APIs on loopback until SIGINT/SIGTERM.

    mindex replay --volume inaturalist=10250 --fault gbif=http_5xx:count=3
    INATURALIST_BASE_URL=http://127.0.0.1:41234/v1
    GBIF_BASE_URL=http://127.0.0.1:41235/v1

stdout carries only the ``<SOURCE>_BASE_URL=...`` lines (one per source) so a script can read them;
the rest goes to stderr. Faults can be switched while it runs through ``/_replay/fault`` on any source
port (see ``mindex.replay.server``); a source set ``down`` is cleared with
``DELETE /_replay/fault?source=<name>`` sent to another source's port, or by restarting.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from mindex.replay.faults import FAULT_KINDS
from mindex.replay.server import ReplayServer


def default_fixtures_dir() -> Path:
    """``$MINDEX_REPLAY_DIR``, else ``../shared/fixtures`` from the cwd, else beside the repo."""
    env = os.environ.get("MINDEX_REPLAY_DIR")
    if env:
        return Path(env)
    relative = Path("..") / "shared" / "fixtures"
    if relative.is_dir():
        return relative.resolve()
    return Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _assignment(text: str, option: str) -> tuple[str, str]:
    source, sep, value = text.partition("=")
    if not sep or not source.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{option} expects SOURCE=VALUE, got {text!r}")
    return source.strip(), value.strip()


def parse_volume(text: str) -> tuple[str, int]:
    source, value = _assignment(text, "--volume")
    try:
        return source, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--volume needs an integer, got {value!r}") from None


def parse_port(text: str) -> tuple[str, int]:
    source, value = _assignment(text, "--port")
    try:
        return source, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port needs an integer, got {value!r}") from None


def parse_fault(text: str) -> tuple[str, str, dict[str, Any]]:
    """``gbif=http_5xx:count=3,status=500`` -> ("gbif", "http_5xx", {"count": 3, "status": 500})."""
    source, spec = _assignment(text, "--fault")
    kind, _, raw_params = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in raw_params.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"fault parameter {item!r} is not NAME=VALUE")
        params[name.strip()] = _scalar(value.strip())
    return source, kind, params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mindex replay",
        description="Serve the real API paths (iNaturalist, GBIF, NWS, Open-Meteo, OpenAQ, OpenSky) and the AISStream "
                    "websocket on loopback from recorded responses, with fault injection.",
    )
    parser.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        metavar="DIR",
        help="recorded fixtures (default: $MINDEX_REPLAY_DIR or ../shared/fixtures)",
    )
    parser.add_argument(
        "--volume",
        type=parse_volume,
        action="append",
        default=[],
        metavar="SOURCE=N",
        help="records in the main dataset, real + derived (repeatable), e.g. inaturalist=10250",
    )
    parser.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="SOURCE=KIND[:K=V,...]",
        help=f"start with a fault (repeatable), e.g. gbif=http_5xx:count=3; kinds: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument(
        "--port",
        type=parse_port,
        action="append",
        default=[],
        metavar="SOURCE=PORT",
        help="fixed port for a source (repeatable; default: a free port)",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="NAME",
        help=(
            "serve only these sources (repeatable; default and 'all': every source with a recording: "
            "inaturalist, gbif, nws, open_meteo, openaq, opensky, and the aisstream websocket)"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--ais-rate", type=float, default=50.0, metavar="PER_S",
                        help="AIS websocket: messages per second (0 = as fast as possible; default 50)")
    parser.add_argument("--ais-fault", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda text: _assignment(text, "--ais-fault"),
                        help="AIS websocket fault (repeatable): disconnect_after=N (close 1006), silence=SECONDS, "
                             "malformed=N, reject=N, rate=PER_S; also GET /_replay/fault?NAME=VALUE on its port")
    return parser


def wants_ais(sources: list[str] | None, fixtures: Path) -> bool:
    """The AIS websocket is served beside the HTTP sources when its recording is there and it is not excluded."""
    chosen = sources is None or "all" in sources or "aisstream" in sources
    return chosen and (fixtures / "aisstream").is_dir()


def main(argv: list[str] | None = None, stop_event: threading.Event | None = None) -> int:
    """Run ``mindex replay``. ``stop_event`` lets a caller (or a test) stop it without a signal."""
    args = build_parser().parse_args(argv)
    fixtures = args.fixtures or default_fixtures_dir()
    try:
        server = ReplayServer(
            fixtures, volumes=dict(args.volume), host=args.host, sources=args.source, ports=dict(args.port)
        )
        for source, kind, params in args.fault:
            server.set_fault(source, kind, **params)
        ais = None
        if wants_ais(args.source, fixtures):
            from mindex.replay.ais_ws import AisReplayServer

            ais = AisReplayServer(fixtures, host=args.host, rate_per_s=args.ais_rate or None)
            ais.apply_faults(dict(args.ais_fault))
        elif args.ais_fault:
            raise ValueError("--ais-fault given, but the AIS websocket is not served")
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"mindex replay: {err}", file=sys.stderr)
        return 2

    stop = stop_event or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        server.start()
        for source in server.sources:
            print(f"{source.upper()}_BASE_URL={server.base_url(source)}", flush=True)
        if ais is not None:
            ais.start()
            print(f"AISSTREAM_URL={ais.url}", flush=True)
            print(f"replay aisstream: {len(ais.envelopes)} envelopes at {args.ais_rate or 'max'}/s, "
                  f"faults {ais.status()['faults']}; control at GET /_replay/fault?NAME=VALUE", file=sys.stderr)
        for source in server.sources:
            status = server.status(source)
            print(
                f"replay {source}: records {status['record_counts']}, fault {status['fault']}",
                file=sys.stderr,
            )
        print(
            "replay: control at <base host:port>/_replay/status; Ctrl-C to stop", file=sys.stderr, flush=True
        )
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        server.stop()
        if ais is not None:
            ais.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
