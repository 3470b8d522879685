"""The web server of ``ntkfast serve`` (Flask; ``pip install 'ntkfast[serve]'``).

Routes:

- ``GET /``                 the page (``static/index.html``; its JS/CSS under ``/static/``,
                            all served from this package: no CDN, works offline);
- ``GET /api/config``       defaults and limits of the request fields;
- ``POST /api/fit``         the computation (:func:`ntkfast.apps.web.api.handle`): 200 with the
                            JSON result, 400/413/422 ``{"error": "field: message", "field"}``
                            for bad input, 500 ``{"error"}`` as the last resort;
- ``POST /api/finite``      ``{"job": id}``: train the finite networks of an earlier fit further
                            (:func:`ntkfast.apps.web.api.handle_continue`; the page streams
                            them until ``done``), 404 for an unknown job.

Every error answers JSON under ``/api/``; no exception escapes a request.  The server
listens on 127.0.0.1 unless ``--host`` says otherwise (it has no authentication: keep it
on loopback).

DNS-rebinding and cross-site guard (every request): a web page elsewhere can make the
browser send requests to 127.0.0.1 (a foreign name resolving to it, or a cross-origin
``fetch``).  The server answers 403 unless the ``Host`` header names the server as it
was bound: 127.0.0.1, localhost or [::1] (or the explicit ``--host``; for a wildcard
``--host 0.0.0.0``/``::`` also this machine's name and any literal IP address, which
DNS cannot rebind), with the bound port; and unless an ``Origin`` header, where
present, is that same ``http://host:port``.

Command line (wired as ``ntkfast serve`` through :func:`add_serve_arguments` and
:func:`main_from_args`)::

    ntkfast serve [--port 8765] [--host 127.0.0.1] [--open]
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading

from . import api

__all__ = ["create_app", "add_serve_arguments", "main_from_args", "make_server",
           "start_background", "check_request_origin", "allowed_host_names",
           "STATIC_DIR", "DEFAULT_HOST", "DEFAULT_PORT"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _flask():
    try:
        import flask
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ntkfast serve needs Flask: pip install 'ntkfast[serve]' "
                          "(or pip install flask)") from exc
    return flask


_WILDCARD = ("0.0.0.0", "::", "")


def _split_authority(value):
    """('host', port or None) of a Host header / URL authority; None if malformed.
    Host names are compared in lower case, IPv6 literals without brackets."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, sep, port = value.partition(":")
        port = port if sep else None
        if port is not None and ":" in port:  # an IPv6 literal needs brackets
            return None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        port = int(port)
    return host.rstrip("."), port


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_host_names(host=DEFAULT_HOST):
    """The host names a server bound to ``host`` answers to (lower case)."""
    names = {"127.0.0.1", "localhost", "::1"}
    host = (host or "").strip().lower().strip("[]")
    if host not in _WILDCARD:
        names.add(host)
    else:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name.lower())
    return names


def check_request_origin(headers, host=DEFAULT_HOST, port=None):
    """None if a request with these headers may be served, else why not (for the 403).

    ``Host`` must be one of :func:`allowed_host_names` (or a literal IP address when
    bound to a wildcard address) with ``port`` (its default 80 when absent; any port
    when ``port`` is None, as for Flask's test client); ``Origin``, if present, must be
    ``http://`` + that same Host.
    """
    raw = headers.get("Host", "")
    parsed = _split_authority(raw)
    if parsed is None:
        return f"missing or malformed Host header {raw!r}"
    name, hport = parsed
    wildcard = (host or "").strip().strip("[]") in _WILDCARD
    if name not in allowed_host_names(host) and not (wildcard and _is_ip(name)):
        return (f"Host {raw!r} is not this server's address; open the page at "
                f"http://127.0.0.1:{port or DEFAULT_PORT}/ (this guards against DNS "
                "rebinding)")
    if port is not None and (hport or 80) != port:
        return f"Host {raw!r} names another port than this server's ({port})"
    origin = headers.get("Origin")
    if origin is not None:
        scheme, sep, authority = origin.strip().lower().partition("://")
        if not sep or scheme != "http" or _split_authority(authority) != (name, hport):
            return (f"cross-origin request from {origin!r} refused; the page must be "
                    f"served by this server ({raw})")
    return None


def create_app(host=DEFAULT_HOST, port=None):
    """The Flask application (no global state: safe to create several).

    ``host``, ``port``: the address the server is bound to, for the Host/Origin guard
    (:func:`check_request_origin`); :func:`make_server` sets the port it bound.
    ``port=None`` accepts any port (e.g. Flask's test client).
    """
    flask = _flask()
    from werkzeug.exceptions import HTTPException

    app = flask.Flask("ntkfast.apps.web", static_folder=STATIC_DIR, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.config["NTKFAST_BIND"] = (host, port)
    app.json.sort_keys = False
    jobs = api.FiniteJobs()   # unfinished finite-network trainings of this app

    def reply(status, payload):
        # allow_nan=False: the API never sends NaN/Infinity (invalid JSON for browsers)
        import json
        body = json.dumps(payload, allow_nan=False, separators=(",", ":"))
        return flask.Response(body, status=status, mimetype="application/json",
                              headers={"Cache-Control": "no-store"})

    @app.before_request
    def guard():
        bound_host, bound_port = app.config["NTKFAST_BIND"]
        why = check_request_origin(flask.request.headers, bound_host, bound_port)
        if why is None:
            return None
        if flask.request.path.startswith("/api/"):
            return reply(403, {"error": f"forbidden: {why}", "field": None})
        return flask.Response(f"403 Forbidden: {why}\n", status=403, mimetype="text/plain",
                              headers={"Cache-Control": "no-store"})

    @app.get("/")
    def index():
        resp = flask.send_from_directory(STATIC_DIR, "index.html")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/api/config")
    def config():
        return reply(200, api.config())

    @app.post("/api/fit")
    def fit():
        return safe_reply(*api.handle(flask.request.get_data(cache=False), jobs))

    @app.post("/api/finite")
    def finite():
        return safe_reply(*api.handle_continue(flask.request.get_data(cache=False), jobs))

    def safe_reply(status, payload):
        try:
            return reply(status, payload)
        except ValueError as exc:  # a non-finite number slipped through: never send bad JSON
            return reply(500, {"error": f"internal error: result not JSON-safe ({exc})",
                               "field": None})

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if flask.request.path.startswith("/api/"):
            field = "body" if exc.code in (400, 413) else None
            return reply(exc.code or 500, {"error": f"{exc.name}: {exc.description}",
                                           "field": field})
        return exc

    @app.errorhandler(Exception)
    def internal_error(exc):  # last resort; api.handle already catches its own errors
        app.logger.exception("unexpected error")
        return reply(500, {"error": f"internal error: {type(exc).__name__}: {exc}",
                           "field": None})

    return app


def make_server(host=DEFAULT_HOST, port=DEFAULT_PORT, app=None):
    """A threaded werkzeug WSGI server (``port=0``: a free port; see ``.server_port``).
    The app's Host/Origin guard is set to the address actually bound."""
    from werkzeug.serving import make_server as _make
    app = app or create_app(host)
    srv = _make(host, port, app, threaded=True)
    app.config["NTKFAST_BIND"] = (host, srv.server_port)
    return srv


def start_background(host=DEFAULT_HOST, port=0, app=None):
    """Start a server in a daemon thread; returns (server, url).  ``server.shutdown()``
    stops it (used by the end-to-end test)."""
    srv = make_server(host, port, app)
    th = threading.Thread(target=srv.serve_forever, name="ntkfast-serve", daemon=True)
    th.start()
    return srv, f"http://{host}:{srv.server_port}/"


def add_serve_arguments(parser):
    """Add ``--host``, ``--port`` and ``--open`` to an argparse parser."""
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to listen on (default: {DEFAULT_HOST}, loopback only; "
                             "the server has no authentication)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port (default: {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--open", action="store_true",
                        help="open the page in the default web browser")
    return parser


def main_from_args(args) -> int:
    """Run the server until Ctrl-C (see :func:`add_serve_arguments`); returns 0."""
    port = args.port
    if not 0 <= port <= 65535:
        raise SystemExit(f"--port: must be in [0, 65535], got {port}")
    host = args.host
    if host not in _LOOPBACK:
        print(f"ntkfast serve: warning: listening on {host}, not loopback: anyone who can "
              "reach this machine can use the server", file=sys.stderr)
    srv = make_server(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{srv.server_port}/"
    print(f"ntkfast serve: {url}  (Ctrl-C to stop)", flush=True)
    if getattr(args, "open", False):
        import webbrowser
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("ntkfast serve: stopped", file=sys.stderr)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":  # python -m ntkfast.apps.web.app [--port ...]
    import argparse
    _p = add_serve_arguments(argparse.ArgumentParser(prog="python -m ntkfast.apps.web.app"))
    sys.exit(main_from_args(_p.parse_args()))
