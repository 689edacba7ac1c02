"""A real SMTP server for the lab and the tests, built on aiosmtpd.

It listens on up to three ports of one address:

- a STARTTLS port: plain SMTP that requires STARTTLS before anything but EHLO;
- an implicit-TLS port: TLS from the first byte, as on 465;
- a silent port: accepts TCP connections and never sends a greeting.

AUTH PLAIN and LOGIN with one configured user are required before MAIL.
Each accepted message is written to the delivery folder as QUEUEID.eml, and
the reply to DATA is `250 2.0.0 Ok: queued as QUEUEID`. Optional rules
reject senders outside allowed domains and reject listed recipients, to
reproduce a relay's refusals.

Run it in the background with

    python -m authops.labsmtp --config FILE          # JSON, keys as the flags
    python -m authops.labsmtp --starttls-port 2587 --cert C --key K \\
        --user lab-mailer --password-file FILE --delivery-dir DIR

The password comes from a file (or `-` for standard input), never from argv.
"""

import argparse
import asyncio
import hmac
import json
import logging
import secrets
import signal
import ssl
import sys
import threading
import warnings
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

log = logging.getLogger("authops.labsmtp")

GREETING_HOSTNAME = "labsmtp.test"
START_TIMEOUT = 10  # seconds to bind every port
# aiosmtpd drops a client that sends nothing for this long.
IDLE_TIMEOUT = 60  # seconds
SENDER_REJECTED = "550 5.7.1 Sender domain not verified: {domain}"
RECIPIENT_REJECTED = "550 5.1.1 Recipient address rejected: {address}"


@dataclass
class LabSmtpConfig:
    """Settings of the lab server: addresses, the accepted user, delivery folder and rejection rules."""

    cert_file: Path
    key_file: Path
    user: str
    password: str = field(repr=False)
    delivery_dir: Path
    host: str = "127.0.0.1"
    starttls_port: int | None = None
    tls_port: int | None = None
    silent_port: int | None = None
    # Empty: every sender domain is accepted.
    allowed_sender_domains: tuple[str, ...] = ()
    rejected_recipients: tuple[str, ...] = ()


class Handler:
    """aiosmtpd hooks: sender and recipient rules, and delivery to .eml files."""

    def __init__(self, config: LabSmtpConfig):
        self.config = config
        self.allowed_domains = {d.lower() for d in config.allowed_sender_domains}
        self.rejected = {r.lower() for r in config.rejected_recipients}

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        domain = parseaddr(address)[1].rpartition("@")[2].lower()
        if self.allowed_domains and domain not in self.allowed_domains:
            log.info("%s: rejected sender %s", session.peer, address)
            return SENDER_REJECTED.format(domain=domain or "(empty)")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.rejected:
            log.info("%s: rejected recipient %s", session.peer, address)
            return RECIPIENT_REJECTED.format(address=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        queue_id = secrets.token_hex(5).upper()
        deliver(self.config.delivery_dir, queue_id, envelope)
        log.info(
            "%s: queued %s from %s to %s",
            session.peer,
            queue_id,
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        # A failed STARTTLS handshake lands here, for example when the client
        # does not trust the certificate: one log line, not a traceback.
        cause = error.__cause__ or error
        log.warning("session error: %s: %s", type(cause).__name__, cause)
        return "421 4.3.0 Session error, closing"


def deliver(directory: Path, queue_id: str, envelope: Envelope) -> Path:
    """Write the message to DIRECTORY/QUEUEID.eml, whole or not at all."""
    header = (
        f"X-Envelope-From: <{envelope.mail_from}>\r\n"
        f"X-Envelope-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}\r\n"
    ).encode()
    content = envelope.original_content or b""
    temporary = directory / f".{queue_id}.tmp"
    temporary.write_bytes(header + content)
    target = directory / f"{queue_id}.eml"
    temporary.rename(target)
    return target


class Authenticator:
    """Accept exactly one user name and password, compared in constant time."""

    def __init__(self, user: str, password: str):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        accepted = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self.user)
            and hmac.compare_digest(auth_data.password, self.password)
        )
        login = getattr(auth_data, "login", b"").decode(errors="replace")
        if accepted:
            log.info("%s: AUTH %s accepted for %s", session.peer, mechanism, login)
        else:
            log.info("%s: AUTH %s rejected for %r", session.peer, mechanism, login)
        # handled=False: aiosmtpd then sends the reply itself (235, or 535 5.7.8).
        return AuthResult(success=accepted, handled=False)


class TrackedSMTP(SMTP):
    """aiosmtpd's SMTP protocol, listed in `connections` while its connection is open."""

    def __init__(self, *args, connections: set, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.connections.discard(self)
        super().connection_lost(error)


class SilentProtocol(asyncio.Protocol):
    """Accept a connection and never send anything, like a stalled server."""

    def __init__(self, connections: set):
        self.connections = connections
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.connections.add(self)
        peer = transport.get_extra_info("peername")
        log.info("%s: silent port holds the connection", peer)

    def connection_lost(self, error: Exception | None) -> None:
        self.connections.discard(self)


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


# aiosmtpd 1.4.6 warnings that do not apply here. The first is logged for
# every connection on the implicit-TLS port, although those connections are
# TLS before the greeting. The second is about aiosmtpd's own code.
IGNORED_AIOSMTPD_WARNINGS = (
    "auth_require_tls == False",
    "Session.login_data is deprecated",
)


def drop_ignored_warning(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in IGNORED_AIOSMTPD_WARNINGS)


def quiet_aiosmtpd() -> None:
    """Keep aiosmtpd's own log at WARNING and drop its warnings that do not apply.

    At DEBUG, aiosmtpd logs AUTH LOGIN continuation lines, which carry the
    base64 password.
    """
    logger = logging.getLogger("mail.log")
    logger.setLevel(logging.WARNING)
    if drop_ignored_warning not in logger.filters:
        logger.addFilter(drop_ignored_warning)
    warnings.filterwarnings(
        "ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning
    )


class LabSmtpServer:
    """The SMTP server on its own event loop thread; `start()` returns once every port listens."""

    def __init__(self, config: LabSmtpConfig):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run_loop, name="labsmtp", daemon=True
        )
        self.servers: list[asyncio.Server] = []
        # Open connections, closed by stop(): in Python 3.11, Server.close()
        # leaves accepted connections open.
        self.connections: set[TrackedSMTP | SilentProtocol] = set()
        self.tls_context = server_tls_context(config.cert_file, config.key_file)
        self.handler = Handler(config)
        self.authenticator = Authenticator(config.user, config.password)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _smtp(self, *, starttls: bool) -> SMTP:
        return TrackedSMTP(
            self.handler,
            connections=self.connections,
            hostname=GREETING_HOSTNAME,
            ident="authops labsmtp",
            tls_context=self.tls_context if starttls else None,
            require_starttls=starttls,
            auth_required=True,
            # On the implicit-TLS port the connection is already TLS, but
            # aiosmtpd counts only STARTTLS as TLS.
            auth_require_tls=starttls,
            authenticator=self.authenticator,
            timeout=IDLE_TIMEOUT,
            loop=self.loop,
        )

    def _silent(self) -> SilentProtocol:
        return SilentProtocol(self.connections)

    async def _open(self) -> None:
        host = self.config.host
        if self.config.starttls_port:
            self.servers.append(
                await self.loop.create_server(
                    lambda: self._smtp(starttls=True), host, self.config.starttls_port
                )
            )
        if self.config.tls_port:
            self.servers.append(
                await self.loop.create_server(
                    lambda: self._smtp(starttls=False),
                    host,
                    self.config.tls_port,
                    ssl=self.tls_context,
                )
            )
        if self.config.silent_port:
            self.servers.append(
                await self.loop.create_server(
                    self._silent, host, self.config.silent_port
                )
            )

    async def _close(self) -> None:
        for server in self.servers:
            server.close()
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.close()
        for server in self.servers:
            await server.wait_closed()
        # Let aiosmtpd's client handlers see the closed connections and end.
        await asyncio.sleep(0.1)

    def start(self) -> "LabSmtpServer":
        """Bind every configured port, or raise OSError naming the failure."""
        quiet_aiosmtpd()
        self.config.delivery_dir.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), self.loop)
        try:
            future.result(timeout=START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        log.info("listening: %s", self.describe())
        return self

    def stop(self) -> None:
        if self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
            try:
                future.result(timeout=START_TIMEOUT)
            except TimeoutError:
                log.warning("some connections did not close within %s s", START_TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread.is_alive():
            self.thread.join(timeout=START_TIMEOUT)
        log.info("stopped")

    def describe(self) -> str:
        ports = {
            "STARTTLS": self.config.starttls_port,
            "implicit TLS": self.config.tls_port,
            "silent": self.config.silent_port,
        }
        listed = [
            f"{name} on {self.config.host}:{port}"
            for name, port in ports.items()
            if port
        ]
        return ", ".join(listed) + f"; delivering to {self.config.delivery_dir}"

    def messages(self) -> list[Path]:
        """Return the delivered .eml files, oldest first."""
        files = self.config.delivery_dir.glob("*.eml")
        return sorted(files, key=lambda path: path.stat().st_mtime_ns)

    def __enter__(self) -> "LabSmtpServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Command line: every flag may also be a key of the JSON config file, with
# dashes written as underscores. Flags override the file.
PATH_KEYS = {"cert_file", "key_file", "delivery_dir", "password_file"}
PORT_KEYS = {"starttls_port", "tls_port", "silent_port"}
LIST_KEYS = {"allowed_sender_domains", "rejected_recipients"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m authops.labsmtp",
        description="Run the lab's SMTP server until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="JSON file with the settings below (underscores for dashes)",
    )

    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--starttls-port", type=int, help="port for SMTP with STARTTLS")
    parser.add_argument("--tls-port", type=int, help="port for SMTP over implicit TLS")
    parser.add_argument(
        "--silent-port", type=int, help="port that accepts connections and never greets"
    )

    parser.add_argument(
        "--cert-file", type=Path, help="server certificate (PEM, chain after it)"
    )
    parser.add_argument(
        "--key-file", type=Path, help="private key of the certificate (PEM)"
    )

    parser.add_argument("--user", help="the SMTP AUTH user name to accept")
    parser.add_argument(
        "--password-file",
        type=Path,
        help="file with the password, or - to read it from standard input",
    )

    parser.add_argument(
        "--delivery-dir",
        type=Path,
        help="folder that receives each message as QUEUEID.eml",
    )

    parser.add_argument(
        "--allowed-sender-domains",
        action="append",
        metavar="DOMAIN",
        help="accept MAIL FROM only from this domain (repeat for more; default: any)",
    )
    parser.add_argument(
        "--rejected-recipients",
        action="append",
        metavar="ADDRESS",
        help="reject RCPT TO for this address with 550 (repeatable)",
    )
    return parser.parse_args(argv)


def read_password(source: Path) -> str:
    """Read the password from a file, or from standard input when `source` is `-`."""
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
    except OSError as error:
        sys.exit(f"labsmtp: cannot read the password file {source}: {error.strerror}")
    password = text.strip()
    if not password:
        sys.exit(f"labsmtp: the password file {source} is empty")
    return password


def read_config_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"labsmtp: cannot read the config file {path}: {error}")
    if not isinstance(settings, dict):
        sys.exit(f"labsmtp: the config file {path} must contain a JSON object")
    if "password" in settings:
        sys.exit("labsmtp: put the password in password_file, not in the config file")
    return settings


def config_from_args(args: argparse.Namespace) -> LabSmtpConfig:
    """Merge the JSON config file and the flags into a LabSmtpConfig, or exit naming the problem."""
    settings = read_config_file(args.config)
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            settings[key] = value

    known = {f.name for f in fields(LabSmtpConfig)} | {"password_file"}
    unknown = sorted(set(settings) - known)
    if unknown:
        sys.exit(
            f"labsmtp: unknown setting(s) in the config file: {', '.join(unknown)}"
        )
    required = ("cert_file", "key_file", "user", "password_file", "delivery_dir")
    missing = [key for key in required if not settings.get(key)]
    if missing:
        sys.exit(f"labsmtp: missing setting(s): {', '.join(missing)}")
    if not any(settings.get(key) for key in PORT_KEYS):
        sys.exit(
            "labsmtp: set at least one of --starttls-port, --tls-port, --silent-port"
        )
    for key in LIST_KEYS & settings.keys():
        if not isinstance(settings[key], list):
            sys.exit(f"labsmtp: {key} must be a list of strings")

    for key in PATH_KEYS & settings.keys():
        settings[key] = Path(settings[key])
    for key in LIST_KEYS & settings.keys():
        settings[key] = tuple(settings[key])
    password = read_password(settings.pop("password_file"))
    return LabSmtpConfig(password=password, **settings)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s labsmtp %(levelname)s %(message)s"
    )
    config = config_from_args(parse_args(sys.argv[1:] if argv is None else argv))
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    server = LabSmtpServer(config)
    try:
        server.start()
    except OSError as error:
        sys.exit(f"labsmtp: cannot listen: {error}")
    print(f"labsmtp ready: {server.describe()}", flush=True)
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
