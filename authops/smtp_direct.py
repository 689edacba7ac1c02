"""The direct mail test: one SMTP session from this machine with the env file's settings.

The session runs in phases: connect (DNS and TCP), greeting (and EHLO), tls
(implicit TLS before the greeting, or STARTTLS after it), auth, sender,
recipient and data. Each phase yields one PhaseResult; the first failure ends
the session and carries the likely cause.

The server certificate is always verified against this machine's CA store,
plus the CA of `ca_file` when given. SMTP_TIMEOUT bounds the DNS lookup, the
TCP connect and each socket read or write.
NOTE: a server that sends a multi-line reply slowly, line by line, can make
one phase last longer than SMTP_TIMEOUT.

The password is sent only inside AUTH and appears in no result: the session
never turns on smtplib's debug output, which would print the AUTH exchange.
"""

import base64
import contextlib
import datetime
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from authops import output
from authops import smtp_diagnosis as diagnosis
from authops.errors import FAILED, OK, WARNING, OpsError
from authops.netguard import check_lab_target
from authops.settings import Settings, Smtp
from authops.validate import is_hostname_or_ip

CONNECT = "connect"
GREETING = "greeting"
TLS = "tls"
AUTH = "auth"
SENDER = "sender"
RECIPIENT = "recipient"
DATA = "data"

# A certificate that expires sooner than this gives a warning, not a failure.
CERT_WARNING_DAYS = 14
MASK = "********"
SUBJECT_PREFIX = "authops mail test"


@dataclass(frozen=True)
class PhaseResult:
    """The outcome of one phase: state OK, WARNING or FAILED, and on failure the likely cause."""

    phase: str
    state: str
    detail: str
    cause: str = ""

    @property
    def failed(self) -> bool:
        return self.state == FAILED


@dataclass
class MailTest:
    """Every phase of one session and, once sent, the test message's identifiers."""

    phases: list[PhaseResult] = field(default_factory=list)
    test_id: str = ""
    message_id: str = ""
    queue_id: str | None = None

    @property
    def failure(self) -> PhaseResult | None:
        return next((result for result in self.phases if result.failed), None)


class PhaseFailed(Exception):
    def __init__(self, phase: str, detail: str, cause: str):
        super().__init__(detail)
        self.result = PhaseResult(phase, FAILED, detail, cause)


PhaseCallback = Callable[[PhaseResult], None]


def probe(
    settings: Settings,
    ca_file: str | Path | None = None,
    on_phase: PhaseCallback | None = None,
) -> list[PhaseResult]:
    """Run the session up to and including authentication, send nothing, and return each phase."""
    return run_session(settings.smtp, None, ca_file, on_phase).phases


def send_test(
    settings: Settings,
    recipient: str,
    ca_file: str | Path | None = None,
    on_phase: PhaseCallback | None = None,
) -> MailTest:
    """Send one test message to `recipient` and return every phase and the message's ids."""
    return run_session(settings.smtp, recipient, ca_file, on_phase)


def run_session(
    smtp: Smtp,
    recipient: str | None,
    ca_file: str | Path | None,
    on_phase: PhaseCallback | None,
) -> MailTest:
    """Run every phase in order and stop at the first failure.

    Only a bad `ca_file` raises (OpsError). Every other failure is a FAILED phase.
    """
    register_credentials(smtp)
    session = Session(smtp, tls_context(ca_file), on_phase)
    try:
        session.connect()
        if smtp.use_ssl:
            session.implicit_tls()
            session.greet()
        else:
            session.greet()
            session.starttls()
        session.authenticate()
        if recipient is not None:
            session.send(recipient)
    except PhaseFailed as failure:
        session.record(failure.result)
    finally:
        session.close()
    return session.outcome


def register_credentials(smtp: Smtp) -> None:
    """Mask the password, and its base64 forms in AUTH, in all later output."""
    if not smtp.password:
        return
    output.register_secret(smtp.password)
    for raw in (smtp.password, f"\0{smtp.username}\0{smtp.password}"):
        output.register_secret(base64.b64encode(raw.encode()).decode())


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """Return a verifying context (TLS 1.2 or newer) that trusts the system CAs and `ca_file`."""
    context = ssl.create_default_context()
    if ca_file is None:
        return context
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise OpsError(
            f"--ca-file {ca_file}: file not found: give the CA certificate (PEM) that signed the relay's certificate"
        ) from None
    except ssl.SSLError as error:
        raise OpsError(
            f"--ca-file {ca_file}: not a PEM certificate ({error.reason}): give the CA certificate in PEM form"
        ) from None
    return context


def client_hostname() -> str:
    """Return the name for EHLO: this machine's host name, with no DNS lookup.

    smtplib's default, socket.getfqdn(), may query DNS.
    """
    name = socket.gethostname()
    return name if is_hostname_or_ip(name) else "localhost"


class Client(smtplib.SMTP):
    """smtplib's client on a socket that the session connected (and for implicit TLS, wrapped)."""

    def __init__(self, sock: socket.socket, host: str, timeout: float):
        super().__init__(local_hostname=client_hostname(), timeout=timeout)
        self.sock = sock
        # starttls() sends this name for SNI and checks the certificate against it.
        self._host = host


class Session:
    """One SMTP session. Each phase method raises PhaseFailed when the phase fails."""

    def __init__(
        self, smtp: Smtp, context: ssl.SSLContext, on_phase: PhaseCallback | None
    ):
        self.smtp = smtp
        self.context = context
        self.on_phase = on_phase
        self.sock: socket.socket | None = None
        self.client: Client | None = None
        self.outcome = MailTest()

    def record(self, result: PhaseResult) -> None:
        result = PhaseResult(
            result.phase,
            result.state,
            self.scrub(result.detail),
            self.scrub(result.cause),
        )
        self.outcome.phases.append(result)
        if self.on_phase:
            self.on_phase(result)

    def passed(self, phase: str, detail: str, state: str = OK) -> None:
        self.record(PhaseResult(phase, state, detail))

    def scrub(self, text: str) -> str:
        """Mask the password in text that came from the server or a library."""
        if self.smtp.password:
            text = text.replace(self.smtp.password, MASK)
        return text

    def reply_text(self, reply: bytes | str) -> str:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        return " ".join(text.split())

    @contextlib.contextmanager
    def guard(self, phase: str) -> Iterator[None]:
        """Turn an SMTP or socket error that a phase does not handle into its failure."""
        try:
            yield
        except (smtplib.SMTPException, OSError) as error:
            raise self.unexpected(phase, error) from None

    def unexpected(self, phase: str, error: Exception) -> PhaseFailed:
        """Turn an error that the phase does not handle itself into a failure with a cause."""
        if diagnosis.timed_out(error):
            detail = f"timed out after {self.smtp.timeout} s waiting for the server"
            return PhaseFailed(phase, detail, diagnosis.stalled_cause(phase))
        if isinstance(error, smtplib.SMTPServerDisconnected):
            detail = f"the server closed the connection ({error})"
            return PhaseFailed(phase, detail, diagnosis.closed_cause(phase))
        if isinstance(error, smtplib.SMTPResponseException):
            detail = f"{error.smtp_code} {self.reply_text(error.smtp_error)}"
            return PhaseFailed(
                phase, detail, "The server rejected the command: read its reply."
            )
        return PhaseFailed(
            phase, f"{type(error).__name__}: {error}", diagnosis.closed_cause(phase)
        )

    def connect(self) -> None:
        check_lab_target(self.smtp.host)
        addresses = self.resolve()
        deadline = time.monotonic() + self.smtp.timeout
        errors: list[OSError] = []
        for family, kind, protocol, _, address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors.append(TimeoutError("timed out"))
                break
            sock = socket.socket(family, kind, protocol)
            sock.settimeout(remaining)
            try:
                sock.connect(address)
            except OSError as error:
                sock.close()
                errors.append(error)
                continue
            sock.settimeout(self.smtp.timeout)
            self.sock = sock
            target = f"{self.smtp.host}:{self.smtp.port}"
            self.passed(CONNECT, f"connected to {target} ({address[0]})")
            return
        raise self.connect_failure(errors[0])

    def connect_failure(self, error: OSError) -> PhaseFailed:
        target = f"{self.smtp.host}:{self.smtp.port}"
        if isinstance(error, TimeoutError):
            detail = f"connection to {target} timed out after {self.smtp.timeout} s"
        elif isinstance(error, ConnectionRefusedError):
            detail = f"connection to {target} refused"
        else:
            detail = f"connection to {target} failed: {error}"
        return PhaseFailed(CONNECT, detail, diagnosis.connect_cause(self.smtp, error))

    def resolve(self) -> list[tuple]:
        """Look up SMTP_HOST within SMTP_TIMEOUT.

        getaddrinfo has no timeout of its own, so it runs in a daemon thread
        that is abandoned when the time is up.
        """
        found: dict[str, object] = {}
        done = threading.Event()

        def lookup() -> None:
            try:
                found["addresses"] = socket.getaddrinfo(
                    self.smtp.host, self.smtp.port, type=socket.SOCK_STREAM
                )
            except OSError as error:
                found["error"] = error
            finally:
                done.set()

        threading.Thread(target=lookup, name="smtp-dns", daemon=True).start()
        if not done.wait(self.smtp.timeout):
            detail = (
                f"DNS lookup of {self.smtp.host} timed out after {self.smtp.timeout} s"
            )
            raise PhaseFailed(CONNECT, detail, diagnosis.dns_cause(self.smtp, None))
        error = found.get("error")
        if isinstance(error, socket.gaierror):
            detail = f"DNS lookup of {self.smtp.host} failed: {error.strerror}"
            raise PhaseFailed(CONNECT, detail, diagnosis.dns_cause(self.smtp, error))
        if isinstance(error, OSError):
            raise self.connect_failure(error)
        return found["addresses"]  # type: ignore[return-value]

    def greet(self) -> None:
        """Read the greeting and send EHLO."""
        assert self.sock is not None
        self.client = Client(self.sock, self.smtp.host, self.smtp.timeout)
        try:
            code, reply = self.client.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            if diagnosis.timed_out(error):
                detail = (
                    f"timed out waiting for the greeting after {self.smtp.timeout} s"
                )
                raise PhaseFailed(
                    GREETING, detail, diagnosis.greeting_timeout_cause(self.smtp)
                ) from None
            raise PhaseFailed(
                GREETING,
                "the server closed the connection before the greeting",
                diagnosis.closed_cause(GREETING),
            ) from None
        greeting = self.reply_text(reply)
        if code != 220:
            raise PhaseFailed(
                GREETING,
                f"the server refused the session: {code} {greeting}",
                "The server does not accept a session from this machine now: it may block this address, or be overloaded.",
            )
        self.ehlo(GREETING)
        self.passed(GREETING, f"{code} {greeting}")

    def ehlo(self, phase: str) -> None:
        assert self.client is not None
        with self.guard(phase):
            code, reply = self.client.ehlo()
        if code != 250:
            raise PhaseFailed(
                phase,
                f"EHLO rejected: {code} {self.reply_text(reply)}",
                "The server rejects EHLO, so it supports neither TLS nor AUTH as the relays require.",
            )

    def implicit_tls(self) -> None:
        assert self.sock is not None
        try:
            self.sock = self.context.wrap_socket(
                self.sock, server_hostname=self.smtp.host
            )
        except (ssl.SSLError, OSError) as error:
            raise self.tls_failure(error) from None
        self.passed(TLS, *describe_tls(self.sock))

    def starttls(self) -> None:
        assert self.client is not None
        if not self.smtp.use_tls:
            self.passed(
                TLS,
                "not encrypted: SMTP_USE_TLS and SMTP_USE_SSL are both false, so mail and credentials cross the network in clear text",
                WARNING,
            )
            return
        if not self.client.has_extn("starttls"):
            raise PhaseFailed(
                TLS,
                "the server does not offer STARTTLS",
                diagnosis.starttls_missing_cause(self.smtp),
            )
        try:
            self.client.starttls(context=self.context)
        except smtplib.SMTPResponseException as error:
            detail = f"STARTTLS rejected: {error.smtp_code} {self.reply_text(error.smtp_error)}"
            raise PhaseFailed(
                TLS, detail, diagnosis.starttls_missing_cause(self.smtp)
            ) from None
        except (ssl.SSLError, OSError) as error:
            raise self.tls_failure(error) from None
        except smtplib.SMTPException as error:
            raise self.unexpected(TLS, error) from None
        self.ehlo(TLS)
        self.passed(TLS, *describe_tls(self.client.sock))

    def tls_failure(self, error: BaseException) -> PhaseFailed:
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = f"certificate verification failed: {error.verify_message}"
        elif diagnosis.timed_out(error):
            detail = f"TLS handshake timed out after {self.smtp.timeout} s"
        elif isinstance(error, ssl.SSLError) and error.reason:
            detail = f"TLS handshake failed: {error.reason}"
        else:
            detail = f"TLS handshake failed: {error}"
        return PhaseFailed(TLS, detail, diagnosis.tls_cause(self.smtp, error))

    def authenticate(self) -> None:
        assert self.client is not None
        if not self.smtp.username:
            self.passed(AUTH, "skipped: SMTP_USERNAME is empty, so no SMTP AUTH")
            return
        if not self.client.has_extn("auth"):
            raise PhaseFailed(
                AUTH,
                "the server offers no AUTH mechanism",
                diagnosis.no_auth_offered_cause(self.smtp),
            )
        try:
            code, reply = self.client.login(self.smtp.username, self.smtp.password)
        except smtplib.SMTPAuthenticationError as error:
            detail = f"{error.smtp_code} {self.reply_text(error.smtp_error)}"
            raise PhaseFailed(
                AUTH, detail, diagnosis.auth_cause(self.smtp, error.smtp_code)
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise PhaseFailed(
                AUTH,
                "the server offers no AUTH mechanism",
                diagnosis.no_auth_offered_cause(self.smtp),
            ) from None
        except smtplib.SMTPException as error:
            if isinstance(error, smtplib.SMTPServerDisconnected):
                raise self.unexpected(AUTH, error) from None
            offered = self.client.esmtp_features.get("auth", "").strip()
            raise PhaseFailed(
                AUTH,
                f"no AUTH mechanism in common: the server offers {offered}",
                "authentik's mail backend (Python's smtplib) supports only CRAM-MD5, PLAIN and LOGIN.",
            ) from None
        except OSError as error:
            raise self.unexpected(AUTH, error) from None
        detail = f"{code} {self.reply_text(reply)} (user {self.smtp.username})"
        self.passed(AUTH, detail)

    def send(self, recipient: str) -> None:
        """Send MAIL, RCPT and DATA for one test message."""
        assert self.client is not None
        message = build_message(self.smtp, recipient)
        self.outcome.test_id = message["X-Authops-Test-Id"]
        self.outcome.message_id = message["Message-ID"]
        self.mail_from()
        self.rcpt_to(recipient)
        self.data(message)

    def mail_from(self) -> None:
        assert self.client is not None
        with self.guard(SENDER):
            code, reply = self.client.mail(self.smtp.sender)
        text = self.reply_text(reply)
        if code != 250:
            cause = diagnosis.sender_cause(self.smtp, code, text)
            raise PhaseFailed(SENDER, f"{code} {text}", cause)
        self.passed(SENDER, f"{code} {text} ({self.smtp.sender})")

    def rcpt_to(self, recipient: str) -> None:
        assert self.client is not None
        with self.guard(RECIPIENT):
            code, reply = self.client.rcpt(recipient)
        text = self.reply_text(reply)
        if code not in (250, 251):
            cause = diagnosis.recipient_cause(recipient, code)
            raise PhaseFailed(RECIPIENT, f"{code} {text}", cause)
        self.passed(RECIPIENT, f"{code} {text} ({recipient})")

    def data(self, message: EmailMessage) -> None:
        assert self.client is not None
        with self.guard(DATA):
            try:
                code, reply = self.client.data(message.as_bytes(policy=policy.SMTP))
            except smtplib.SMTPDataError as error:
                # The server replied to DATA itself with a code other than 354.
                code, reply = error.smtp_code, error.smtp_error
        text = self.reply_text(reply)
        if code != 250:
            cause = diagnosis.data_cause(self.smtp, code, text)
            raise PhaseFailed(DATA, f"{code} {text}", cause)
        self.outcome.queue_id = parse_queue_id(text)
        queue = self.outcome.queue_id or "none in the reply"
        self.passed(DATA, f"{code} {text} (queue id: {queue})")

    def close(self) -> None:
        """Send QUIT if a session is open, then close the socket."""
        if self.client is not None:
            try:
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                self.client.close()
        elif self.sock is not None:
            self.sock.close()


def describe_tls(sock: ssl.SSLSocket) -> tuple[str, str]:
    """Return the state and a detail: protocol, cipher, certificate subject and expiry."""
    certificate = sock.getpeercert() or {}
    cipher = sock.cipher()
    subject = format_name(certificate.get("subject", ())) or "(empty)"
    issuer = format_name(certificate.get("issuer", ())) or "(empty)"
    expires = datetime.datetime.fromtimestamp(
        ssl.cert_time_to_seconds(certificate["notAfter"]), datetime.UTC
    )
    days = (expires - datetime.datetime.now(datetime.UTC)).days
    detail = (
        f"{sock.version()}, {cipher[0] if cipher else 'unknown cipher'}; certificate "
        f"{subject}, issued by {issuer}, expires {expires:%Y-%m-%d} (in {days} days)"
    )
    return detail, WARNING if days < CERT_WARNING_DAYS else OK


NAME_ABBREVIATIONS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def format_name(name: tuple) -> str:
    """Format a name from SSLSocket.getpeercert() as `CN=..., O=...`."""
    parts = [
        f"{NAME_ABBREVIATIONS.get(key, key)}={value}"
        for relative_name in name
        for key, value in relative_name
    ]
    return ", ".join(parts)


def build_message(smtp: Smtp, recipient: str) -> EmailMessage:
    """Build the test message: a unique id in the subject, a Message-ID, From SMTP_FROM."""
    test_id = uuid.uuid4().hex[:16]
    message = EmailMessage()
    message["Subject"] = f"{SUBJECT_PREFIX} {test_id}"
    message["From"] = smtp.sender
    message["To"] = recipient
    message["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    message["Message-ID"] = make_msgid(
        idstring=test_id, domain=smtp.sender.rpartition("@")[2]
    )
    message["X-Authops-Test-Id"] = test_id
    message.set_content(
        f"This test message was sent by `invoke smtp.test` through {smtp.host}:{smtp.port}.\n"
        f"Test id: {test_id}\n\nIt needs no action.\n"
    )
    return message


def parse_queue_id(reply: str) -> str | None:
    """Return the queue id in a 250 reply to DATA, or None.

    Known forms: Postfix and this project's lab server, `2.0.0 Ok: queued as
    ID`; Microsoft 365, `2.0.0 OK <ID> [Hostname=...]`; Exim, `OK id=ID`.
    Other relays get their first <...> token, if any.
    """
    words = reply.split()
    lowered = [word.lower() for word in words]
    for index, word in enumerate(lowered[:-2]):
        if word == "queued" and lowered[index + 1] == "as":
            return words[index + 2].strip("<>.,")
    for word in words:
        if word.lower().startswith("id="):
            return word[3:].strip("<>.,") or None
        if word.startswith("<") and word.endswith(">") and len(word) > 2:
            return word[1:-1]
    return None
