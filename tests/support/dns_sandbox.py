"""Run a command whose DNS lookups reach only a stub resolver on loopback.

Start it inside fresh network and mount namespaces, so nothing leaves this
machine and the bind mount is private:

    unshare --net --mount python -m tests.support.dns_sandbox [--silent] -- COMMAND...

It brings up loopback and bind-mounts a resolv.conf that names 127.0.0.1.
On 127.0.0.1:53 (UDP) it replies NXDOMAIN to every query, or with --silent
never replies, so glibc waits 5 s per try, twice. Then it runs COMMAND and
exits with its exit code.
"""

import socket
import struct
import subprocess
import sys
import tempfile
import threading

NXDOMAIN = 3
HEADER = struct.Struct("!HHHHHH")


def nxdomain_reply(query: bytes) -> bytes | None:
    """Return a reply to `query` with the question copied and RCODE NXDOMAIN, or None if malformed."""
    if len(query) < HEADER.size:
        return None
    ident, flags, questions, _, _, _ = HEADER.unpack_from(query)
    recursion_desired = flags & 0x0100
    reply_flags = 0x8000 | recursion_desired | 0x0080 | NXDOMAIN
    return HEADER.pack(ident, reply_flags, questions, 0, 0, 0) + query[HEADER.size :]


def serve(sock: socket.socket, silent: bool) -> None:
    while True:
        query, client = sock.recvfrom(512)
        reply = nxdomain_reply(query)
        if reply and not silent:
            sock.sendto(reply, client)


def main(command: list[str], silent: bool) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)  # noqa: SIM115
    resolv.write("nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
    resolv.close()
    subprocess.run(["mount", "--bind", resolv.name, "/etc/resolv.conf"], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    threading.Thread(target=serve, args=(sock, silent), daemon=True).start()
    return subprocess.run(command).returncode


if __name__ == "__main__":
    arguments = sys.argv[1:]
    silent = arguments[:1] == ["--silent"]
    if silent:
        arguments = arguments[1:]
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    sys.exit(main(arguments, silent))
