"""A stand-in authentik node for HAProxy tests: an HTTPS server on one loopback address.

Run as a process (`python -m tests.support.backend NAME ADDRESS PORT CERT KEY FLAG`),
so a test can kill it like a failed node. GET /-/health/ready/ returns 200,
or 503 while the file FLAG exists. Any other path returns 200 with JSON:
the server's name and the request headers it received.
"""

import json
import os
import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin"

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's
        # algorithm delays the body until HAProxy acknowledges the headers.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):  # noqa: N802 - the name http.server calls
        if self.path == "/-/health/ready/":
            ready = not os.path.exists(self.server.not_ready_flag)
            self.reply(200 if ready else 503, {"ready": ready})
            return
        self.reply(
            200,
            {"name": self.server.name, "headers": list(self.headers.items())},
        )

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Powered-By", "standin")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - the signature http.server uses
        pass


def serve(name: str, address: str, port: int, cert: str, key: str, flag: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    server.name = name
    server.not_ready_flag = flag
    # The handshake runs in each request's thread, not in the accept loop.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    name, address, port, cert, key, flag = sys.argv[1:7]
    serve(name, address, int(port), cert, key, flag)
