"""ReplayServer: the real iNaturalist / GBIF API paths answered on loopback from recorded responses.

One ``ThreadingHTTPServer`` per source, each on its own port, so that the ``down`` fault can truly refuse
connections for one source while the others keep answering. ``clear_fault`` re-binds the same port number.

Control endpoint (every source port; never faulted, not in ``request_log``):

* ``GET /_replay/status`` -> ``{"source", "base_url", "port", "up", "fault", "record_counts", "requests"}``
* ``POST /_replay/fault`` with JSON ``{"kind": "http_5xx", "count": 3, ...}`` sets a fault,
  ``DELETE /_replay/fault`` clears it.
* ``GET /_replay/requests`` -> the request log.

Each accepts ``?source=<name>`` to act on another source, which is how a ``down`` source is brought back
over HTTP: its own port refuses connections, so send ``DELETE /_replay/fault?source=gbif`` to another
source's port, or use ``ReplayServer.clear_fault`` / restart ``mindex replay``.

* ``/_replay/<source>/<action>`` (any port) goes to that source's ``control`` method, e.g.
  ``PUT /_replay/nws/active`` (see ``mindex.replay.sources.nws``).

By default every registered source whose fixtures exist is served; a source with ``served_by_default = False``
is served only when named in ``sources=`` or when ``sources`` includes ``"all"``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mindex.replay.base import ReplaySource, Request, Response, registered_sources
from mindex.replay.faults import Fault, FaultState, fault_response, make_fault

log = logging.getLogger("mindex.replay")

CONTROL_PREFIX = "/_replay/"
REQUEST_LOG_LIMIT = 100_000  # per source; a long-running `mindex replay` must not grow without bound


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # clear_fault("down") re-binds the same port right away

    def __init__(self, address: tuple[str, int], replay: ReplayServer, source: str) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.replay = replay
        self.source = source
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    # Track open (keep-alive) connections so "down" can cut them too, not only the listening socket.
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, keep: Any = None) -> None:
        with self._connections_lock:
            connections = [c for c in self._connections if c is not keep]
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("replay %s: connection error from %s", self.source, client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pager makes hundreds of requests
    server_version = "mindex-replay/1"
    server: _Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("replay %s: " + format, self.server.source, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), body, headers)
        replay, source = self.server.replay, self.server.source
        if request.path.startswith(CONTROL_PREFIX):
            # The connection is passed so that going "down" over HTTP spares it until the answer is out.
            response, hang_up = replay._control(source, request, self.connection)
            if hang_up:  # tell the client too, or it would reuse the dead connection from its pool
                response.headers["Connection"] = "close"
            self._send(response)
            return
        response = replay._serve(source, request)
        if response is None:  # "down" raced with an open connection: hang up without an answer
            self.close_connection = True
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client went away (or the source went down) mid-answer


class ReplayServer:
    """Serve recorded API responses for every source found under ``fixtures_dir``.

    ``volumes`` maps a source to the number of records its main dataset should hold (observations for
    inaturalist, occurrences for gbif); records beyond the real ones are derived (``mindex.replay.store``).
    ``sources`` restricts which registered sources are served (default: every source with fixtures whose
    ``served_by_default`` is true; ``"all"`` among them adds every registered source with fixtures);
    ``ports`` pins port numbers (default: free).
    """

    def __init__(
        self,
        fixtures_dir: Path,
        volumes: dict[str, int] | None = None,
        host: str = "127.0.0.1",
        *,
        sources: Iterable[str] | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.fixtures_dir = Path(fixtures_dir)
        if not self.fixtures_dir.is_dir():
            raise FileNotFoundError(f"replay fixtures directory not found: {self.fixtures_dir}")
        self.host = host
        registry = registered_sources()
        available = [n for n, cls in registry.items() if (self.fixtures_dir / (cls.fixture_subdir or n)).is_dir()]
        if sources is None:
            names = [n for n in available if registry[n].served_by_default]
        else:
            requested = {sources} if isinstance(sources, str) else set(sources)
            if "all" in requested:
                requested = (requested - {"all"}) | set(available)
            names = sorted(requested)
            unknown = [n for n in names if n not in registry]
            if unknown:
                raise ValueError(f"unknown replay source(s) {unknown}; registered: {sorted(registry)}")
        volumes = dict(volumes or {})
        stray = set(volumes) - set(names)
        if stray:
            raise ValueError(f"volumes given for sources that are not served: {sorted(stray)}")
        self._sources: dict[str, ReplaySource] = {
            n: registry[n](self.fixtures_dir, volumes.get(n)) for n in names
        }
        self._faults = {n: FaultState() for n in names}
        self._logs: dict[str, deque[dict[str, Any]]] = {n: deque(maxlen=REQUEST_LOG_LIMIT) for n in names}
        self._log_lock = threading.Lock()
        self._ports: dict[str, int] = {n: int(p) for n, p in (ports or {}).items() if n in self._sources}
        self._listeners: dict[str, _Listener | None] = {n: None for n in names}
        self._lock = threading.RLock()
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        return sorted(self._sources)

    def start(self) -> ReplayServer:
        with self._lock:
            if self._started:
                return self
            try:
                for name in self.sources:
                    self._open(name)  # binds every port, so base_url works even for a source set "down"
                self._started = True
                for name in self.sources:
                    fault = self._faults[name].peek()
                    if fault is not None and fault.kind == "down":
                        self._close(name)
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for name in self.sources:
                self._close(name)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _open(self, name: str) -> None:
        if self._listeners[name] is not None:
            return
        port = self._ports.get(name, 0)
        try:
            listener = _Listener((self.host, port), self, name)
        except OSError as err:
            raise OSError(
                err.errno, f"replay {name}: cannot bind {self.host}:{port}: {err.strerror}"
            ) from err
        self._ports[name] = listener.server_address[1]
        self._listeners[name] = listener
        self._sources[name].local_base_url = self.base_url(name)
        thread = threading.Thread(
            target=listener.serve_forever, kwargs={"poll_interval": 0.05}, name=f"replay-{name}", daemon=True
        )
        thread.start()

    def _close(self, name: str, keep: Any = None) -> None:
        """Stop listening (connection refused from here on) and cut open connections, except ``keep``."""
        listener = self._listeners.get(name)
        if listener is None:
            return
        self._listeners[name] = None
        listener.shutdown()
        listener.server_close()
        listener.close_connections(keep)

    def _source(self, name: str) -> ReplaySource:
        try:
            return self._sources[name]
        except KeyError:
            raise KeyError(f"unknown replay source {name!r}; serving {self.sources}") from None

    # --- public API -----------------------------------------------------------------------------------------
    def port(self, source: str) -> int:
        self._source(source)
        if source not in self._ports:
            raise RuntimeError("the replay server is not started")
        return self._ports[source]

    def base_url(self, source: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port(source)}{self._source(source).base_path}"

    def source_object(self, name: str) -> ReplaySource:
        """The live source object, for source-specific switches (``source_object("nws").set_active(...)``)."""
        return self._source(name)

    def set_fault(self, source: str, kind: str, **params: Any) -> None:
        """Switch ``source`` to fault ``kind`` (one of FAULT_KINDS). For "down" it returns once the port
        refuses connections."""
        self._source(source)
        self._apply_fault(source, make_fault(kind, **params))

    def _apply_fault(self, source: str, fault: Fault, keep: Any = None) -> None:
        with self._lock:
            self._faults[source].set(fault)
            if not self._started:
                return
            if fault.kind == "down":
                self._close(source, keep)
            else:
                self._open(source)  # switching from "down" to another fault brings the port back

    def clear_fault(self, source: str) -> None:
        self._source(source)
        with self._lock:
            self._faults[source].set(None)
            if self._started:
                self._open(source)  # after "down": the same port number again

    def fault(self, source: str) -> dict[str, Any] | None:
        current = self._faults[self._source(source).name].peek()
        return None if current is None else current.describe()

    def request_log(self, source: str) -> list[dict[str, Any]]:
        """API requests received by ``source``, oldest first: ``{"method", "path", "query", "status",
        "fault"}`` each. ``query`` maps each parameter to its value (repeated values joined with commas)."""
        self._source(source)
        with self._log_lock:
            return list(self._logs[source])

    def record_count(self, source: str, dataset: str) -> int:
        return self._source(source).record_count(dataset)

    def status(self, source: str) -> dict[str, Any]:
        src = self._source(source)
        return {
            "source": source,
            "base_url": self.base_url(source) if source in self._ports else None,
            "port": self._ports.get(source),
            "up": self._listeners.get(source) is not None,
            "fault": self.fault(source),
            "record_counts": {ds: src.record_count(ds) for ds in src.datasets},
            "requests": len(self._logs[source]),
        }

    # --- request handling (called from handler threads) ---------------------------------------------------
    def _serve(self, source: str, request: Request) -> Response | None:
        src = self._sources[source]
        fault = self._faults[source].take()
        kind = fault.kind if fault else None
        response: Response | None
        if kind == "down":
            response = None
        else:
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.params["delay_s"])
            replaced = fault_response(fault) if fault else None
            if replaced is not None:
                status, body, content_type, headers = replaced
                response = Response(status, body, content_type, headers)
            else:
                try:
                    response = src.handle(request)
                except Exception as err:  # a replay bug must show up as a loud 500, not a hang
                    log.exception("replay %s: handler failed for %s", source, request.path)
                    response = Response(
                        500,
                        json.dumps({"error": f"replay handler failed: {err!r}"}).encode(),
                        "application/json",
                    )
                if kind == "truncated":
                    # A complete HTTP message whose JSON body stops half way (Content-Length matches).
                    response = Response(200, response.body[: len(response.body) // 2], src.json_content_type)
        entry = {
            "method": request.method,
            "path": request.path,
            "query": {k: ",".join(v) for k, v in request.query.items()},
            "status": response.status if response else None,
            "fault": kind,
            # What a real API keys on (NWS rejects requests without a contact in the User-Agent).
            "user_agent": request.headers.get("user-agent"),
            "accept": request.headers.get("accept"),
        }
        with self._log_lock:
            self._logs[source].append(entry)
        return response

    def _control(self, source: str, request: Request, connection: Any = None) -> tuple[Response, bool]:
        """Answer a ``/_replay/*`` request; the flag says to close ``connection`` after the answer."""

        def answer(payload: Any, status: int = 200) -> Response:
            return Response(status, json.dumps(payload).encode("utf-8"), "application/json")

        target = request.first("source") or source
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        owner, _, sub_action = action.partition("/")
        if sub_action and owner in self._sources:  # /_replay/<source>/<action>: the source's own switches
            handled = self._sources[owner].control(sub_action, request)
            if handled is not None:
                return handled, False
            return answer({"error": f"unknown control request for {owner}: {sub_action!r}"}, 404), False
        if target not in self._sources:
            return answer({"error": f"unknown source {target!r}", "sources": self.sources}, 404), False
        if action == "status" and request.method == "GET":
            return answer(self.status(target)), False
        if action == "requests" and request.method == "GET":
            return answer(self.request_log(target)), False
        if action == "fault" and request.method == "DELETE":
            self.clear_fault(target)
            return answer(self.status(target)), False
        if action == "fault" and request.method in ("POST", "PUT"):
            try:
                spec = json.loads(request.body or b"{}")
                if not isinstance(spec, dict) or "kind" not in spec:
                    raise ValueError('body must be a JSON object with "kind"')
                spec = dict(spec)
                target = str(spec.pop("source", target))
                if target not in self._sources:
                    raise ValueError(f"unknown source {target!r}")
                fault = make_fault(str(spec.pop("kind")), **spec)
            except (ValueError, TypeError) as err:
                return answer({"error": str(err)}, 400), False
            # "down" on this very port: the port is closed before answering (so the caller's next request is
            # refused), but this connection is kept until the answer is out, then closed.
            own = target == source
            self._apply_fault(target, fault, keep=connection if own else None)
            return answer(self.status(target)), fault.kind == "down" and own
        return answer(
            {
                "error": "unknown control request",
                "try": [
                    "GET /_replay/status",
                    "POST /_replay/fault",
                    "DELETE /_replay/fault",
                    "GET /_replay/requests",
                ],
            },
            404,
        ), False
