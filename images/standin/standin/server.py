"""`ak server`: HTTP on 9000, HTTPS on 9443 (self-signed), metrics on 9300."""

import html
import ipaddress
import signal
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standin import config, database, log, state, version
from standin.dbwatch import DatabaseWatch

HTTP_PORT = 9000
HTTPS_PORT = 9443
METRICS_PORT = 9300
TLS_DIR = Path("/tmp/authentik-tls")
LOGIN_PATH = "/if/flow/default-authentication-flow/"
HEALTH_PATHS = ("/-/health/live/", "/-/health/ready/")


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, name: str) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + 1


COUNTERS = Counters()
WATCH = DatabaseWatch()


def client_address(handler: BaseHTTPRequestHandler) -> str:
    """Return the client address, taken from X-Forwarded-For only behind a trusted proxy."""
    peer = handler.client_address[0]
    forwarded = handler.headers.get("X-Forwarded-For", "")
    if not forwarded:
        return peer
    try:
        peer_address = ipaddress.ip_address(peer)
        trusted = any(
            peer_address in ipaddress.ip_network(cidr, strict=False)
            for cidr in config.trusted_proxy_cidrs()
        )
    except ValueError:
        trusted = False
    return forwarded.split(",")[0].strip() if trusted else peer


class AppHandler(BaseHTTPRequestHandler):
    server_version = "authentik-standin"
    sys_version = ""

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        path = self.path.split("?", 1)[0]
        COUNTERS.add("requests")
        if path == "/-/health/live/":
            self.respond(200, "text/plain", b"")
        elif path == "/-/health/ready/":
            error = database.check(config.database())
            WATCH.record(error)
            self.respond(503 if error else 200, "text/plain", b"")
        elif path == "/":
            self.send_response(302)
            self.send_header("Location", LOGIN_PATH)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.respond(200, "text/html; charset=utf-8", self.page())

    do_HEAD = do_GET

    def page(self) -> bytes:
        body = (
            "<!DOCTYPE html><html><head><title>authentik</title></head><body>"
            f"<h1>authentik stand-in {html.escape(version())}</h1>"
            f"<p>instance: {html.escape(socket.gethostname())} (server)</p>"
            f"<p>host: {html.escape(self.headers.get('Host', ''))}</p>"
            f"<p>client: {html.escape(client_address(self))}</p>"
            "</body></html>"
        )
        return body.encode()

    def respond(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the signature of http.server
        if self.path.split("?", 1)[0] in HEALTH_PATHS:
            return
        log.info(
            "request",
            method=self.command,
            path=self.path,
            status=args[1] if len(args) > 1 else "",
            client=client_address(self),
        )


class MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        with COUNTERS.lock:
            counters = dict(COUNTERS.values)
        lines = [
            "# TYPE authentik_standin_up gauge",
            "authentik_standin_up 1",
            "# TYPE authentik_standin_requests_total counter",
            f"authentik_standin_requests_total {counters.get('requests', 0)}",
        ]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        return


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        return  # a client that hangs up early is not an error of the server


class TLSServer(QuietServer):
    """An HTTPS server that runs each TLS handshake in the request's thread."""

    def __init__(self, address, handler, context: ssl.SSLContext):
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


def self_signed_context() -> ssl.SSLContext:
    """Generate a self-signed certificate with openssl, as authentik does at start."""
    TLS_DIR.mkdir(mode=0o700, exist_ok=True)
    key, cert = TLS_DIR / "key.pem", TLS_DIR / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=authentik default certificate",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def run() -> int:
    state.write_mode("server")
    servers = [
        QuietServer(("", HTTP_PORT), AppHandler),
        TLSServer(("", HTTPS_PORT), AppHandler, self_signed_context()),
        QuietServer(("", METRICS_PORT), MetricsHandler),
    ]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for server in servers:
        serve(server)
    log.info(
        "server started", version=version(), ports=[HTTP_PORT, HTTPS_PORT, METRICS_PORT]
    )
    WATCH.record(database.check(config.database()))
    stop.wait()
    log.info("server stopping")
    for server in servers:
        server.shutdown()
    return 0
