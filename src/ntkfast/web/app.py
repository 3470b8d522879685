"""The web server of ``ntkfast serve`` (Flask; ``pip install 'ntkfast[serve]'``).

Routes:

- ``GET /``                 the page (``static/index.html``; its JS/CSS under ``/static/``,
                            all served from this package: no CDN, works offline);
- ``GET /api/config``       defaults and limits of the request fields;
- ``POST /api/fit``         the computation (:func:`ntkfast.web.api.handle`): 200 with the
                            JSON result, 400/413/422 ``{"error": "field: message", "field"}``
                            for bad input, 500 ``{"error"}`` as the last resort.

Every error answers JSON under ``/api/``; no exception escapes a request.  The server
listens on 127.0.0.1 unless ``--host`` says otherwise (it has no authentication: keep it
on loopback).

Command line (wired as ``ntkfast serve`` through :func:`add_serve_arguments` and
:func:`main_from_args`)::

    ntkfast serve [--port 8765] [--host 127.0.0.1] [--open]
"""

from __future__ import annotations

import os
import sys
import threading

from . import api

__all__ = ["create_app", "add_serve_arguments", "main_from_args", "make_server",
           "start_background", "STATIC_DIR", "DEFAULT_HOST", "DEFAULT_PORT"]

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


def create_app():
    """The Flask application (no global state: safe to create several)."""
    flask = _flask()
    from werkzeug.exceptions import HTTPException

    app = flask.Flask("ntkfast.web", static_folder=STATIC_DIR, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.json.sort_keys = False

    def reply(status, payload):
        # allow_nan=False: the API never sends NaN/Infinity (invalid JSON for browsers)
        import json
        body = json.dumps(payload, allow_nan=False, separators=(",", ":"))
        return flask.Response(body, status=status, mimetype="application/json",
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
        status, payload = api.handle(flask.request.get_data(cache=False))
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
    """A threaded werkzeug WSGI server (``port=0``: a free port; see ``.server_port``)."""
    from werkzeug.serving import make_server as _make
    return _make(host, port, app or create_app(), threaded=True)


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


if __name__ == "__main__":  # python -m ntkfast.web.app [--port ...]
    import argparse
    _p = add_serve_arguments(argparse.ArgumentParser(prog="python -m ntkfast.web.app"))
    sys.exit(main_from_args(_p.parse_args()))
