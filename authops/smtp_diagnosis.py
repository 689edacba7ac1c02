"""Likely causes of SMTP failures, in the terms of the mail provider.

Each function returns one sentence or two for the operator: what probably
went wrong and which setting or provider option to check. The provider is
recognised from SMTP_HOST: Microsoft 365 (office365.com, outlook.com) or
Azure Communication Services (azurecomm.net).
"""

import errno
import socket
import ssl

from authops.settings import Smtp

MICROSOFT_365_SUFFIXES = ("office365.com", "outlook.com")
AZURE_COMMUNICATION_SUFFIXES = ("azurecomm.net",)

# OpenSSL reasons for a handshake that met plain text instead of TLS: the
# client sent a ClientHello to a port that speaks SMTP first (OpenSSL 3).
PLAIN_TEXT_REASONS = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
    "UNEXPECTED_RECORD",
}
# OpenSSL verify codes (x509_vfy.h).
CERT_HAS_EXPIRED = 10
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64


def is_microsoft_365(host: str) -> bool:
    return host.lower().rstrip(".").endswith(MICROSOFT_365_SUFFIXES)


def is_azure_communication(host: str) -> bool:
    return host.lower().rstrip(".").endswith(AZURE_COMMUNICATION_SUFFIXES)


def timed_out(error: BaseException | None) -> bool:
    """Return whether `error`, or an error it was raised from, is a socket timeout.

    smtplib turns a timeout while reading a reply into SMTPServerDisconnected,
    raised while handling the TimeoutError.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, TimeoutError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def implicit_tls_hint(port: int) -> str:
    return (
        f"If port {port} expects implicit TLS (as 465 does), set SMTP_USE_SSL=true "
        "and SMTP_USE_TLS=false"
    )


def starttls_hint(port: int) -> str:
    return (
        f"If port {port} expects a plain greeting and then STARTTLS (as 587 does), "
        "set SMTP_USE_TLS=true and SMTP_USE_SSL=false"
    )


def dns_cause(smtp: Smtp, error: socket.gaierror | None) -> str:
    """Explain a failed or timed-out lookup of SMTP_HOST."""
    if error is not None and error.errno == socket.EAI_NONAME:
        return f"DNS lookup failed: the name {smtp.host} does not exist. Check SMTP_HOST for a typo."
    return (
        f"DNS lookup failed: the resolver gave no answer for {smtp.host}. "
        "Check this machine's DNS resolver (/etc/resolv.conf) and its network."
    )


def connect_cause(smtp: Smtp, error: OSError) -> str:
    """Explain a TCP connect that failed."""
    target = f"{smtp.host}:{smtp.port}"
    if isinstance(error, TimeoutError):
        return (
            f"The connection timed out: outbound port {smtp.port} is probably blocked "
            f"(by a firewall or the hosting provider), or {smtp.host} is down. "
            f"Check from this machine with `nc -vz {smtp.host} {smtp.port}`."
        )
    if isinstance(error, ConnectionRefusedError):
        return (
            f"The connection was refused: nothing listens on {target}, or a firewall "
            "rejects the connection. Check SMTP_HOST and SMTP_PORT."
        )
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"No route to {smtp.host}: check this machine's network and routes."
    return f"Connecting to {target} failed: {error}."


def greeting_timeout_cause(smtp: Smtp) -> str:
    """Explain a server that accepted the connection but never greeted."""
    if smtp.use_ssl:
        return (
            "The TLS handshake worked but the server sent no greeting: it is stalled "
            "or overloaded. Try again later."
        )
    return (
        "The TLS mode probably does not match the port: the server accepted the "
        "connection but sent no greeting, which is what a port that expects implicit "
        f"TLS does. {implicit_tls_hint(smtp.port)}."
    )


def starttls_missing_cause(smtp: Smtp) -> str:
    return (
        f"The TLS mode does not match the port: port {smtp.port} offers no STARTTLS. "
        f"{implicit_tls_hint(smtp.port)}; otherwise the relay does not offer TLS on "
        "this port."
    )


def tls_cause(smtp: Smtp, error: BaseException) -> str:
    """Explain a failed TLS handshake, implicit or after STARTTLS."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return certificate_cause(smtp, error)
    if timed_out(error):
        if smtp.use_ssl:
            return (
                "The TLS mode probably does not match the port: the server did not "
                f"answer the TLS handshake. {starttls_hint(smtp.port)}."
            )
        return "The server accepted STARTTLS but did not finish the TLS handshake: it is stalled."
    reason = getattr(error, "reason", None)
    plain_text = reason in PLAIN_TEXT_REASONS or isinstance(
        error, (ssl.SSLEOFError, ConnectionResetError)
    )
    if plain_text and smtp.use_ssl:
        return (
            f"The TLS mode does not match the port: port {smtp.port} answered in plain "
            f"text, so it does not expect implicit TLS. {starttls_hint(smtp.port)}."
        )
    return (
        "The server and this machine could not agree on TLS: this test requires "
        "TLS 1.2 or newer, as Azure Communication Services and Microsoft 365 do."
    )


def certificate_cause(smtp: Smtp, error: ssl.SSLCertVerificationError) -> str:
    if error.verify_code == CERT_HAS_EXPIRED:
        return "The server certificate has expired: the relay's operator must renew it."
    if error.verify_code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
        return (
            f"The server certificate is not valid for {smtp.host}: set SMTP_HOST to a "
            "name that the certificate lists."
        )
    return (
        "The server certificate is not trusted: no CA that this machine trusts "
        "signed it. If the relay uses a private CA, pass --ca-file PATH with that "
        "CA's certificate (PEM)."
    )


def auth_cause(smtp: Smtp, code: int) -> str:
    """Explain a rejected AUTH (535 and the like) in the provider's terms."""
    if 400 <= code < 500:
        return (
            "The server could not check the credentials right now (a temporary "
            "failure). Try again later."
        )
    if is_microsoft_365(smtp.host):
        return (
            "Authentication failed: the credentials are wrong, or Microsoft 365 does "
            "not allow SMTP AUTH for this mailbox. Check SMTP_USERNAME and "
            "SMTP_PASSWORD, that Authenticated SMTP is enabled for the mailbox (and "
            "the tenant), and that security defaults or a Conditional Access policy "
            "do not block basic authentication."
        )
    if is_azure_communication(smtp.host):
        return (
            "Authentication failed: check SMTP_USERNAME, the name of the SMTP "
            "Username resource (or the older <resource>.<app id>.<tenant id> form), "
            "and SMTP_PASSWORD, the client secret of the Entra app (client secrets "
            "expire). The app also needs access to the Communication Services "
            "resource."
        )
    return "Authentication failed: the credentials are wrong. Check SMTP_USERNAME and SMTP_PASSWORD."


def no_auth_offered_cause(smtp: Smtp) -> str:
    if not (smtp.use_tls or smtp.use_ssl):
        return (
            "Relays offer AUTH only over TLS: set SMTP_USE_TLS=true (STARTTLS) or "
            "SMTP_USE_SSL=true (implicit TLS) to match the port."
        )
    return (
        "The server does not accept SMTP AUTH on this port. Clear SMTP_USERNAME if "
        "the relay accepts this machine without AUTH, or use the relay's submission "
        "port."
    )


def sender_cause(smtp: Smtp, code: int, reply: str) -> str:
    """Explain a rejected MAIL FROM."""
    if code == 530 or "authentication required" in reply.lower():
        return "The server requires SMTP AUTH before sending: set SMTP_USERNAME and SMTP_PASSWORD."
    if 400 <= code < 500:
        return "The server deferred the sender (a temporary failure). Try again later."
    cause = (
        f"The sender was rejected: the domain of SMTP_FROM={smtp.sender} is probably "
        "not verified with the relay, or this account may not send as that address."
    )
    if is_azure_communication(smtp.host):
        cause += (
            " For Azure Communication Services, SMTP_FROM must be a MailFrom address "
            "of a verified domain that is connected to the Communication Services "
            "resource."
        )
    elif is_microsoft_365(smtp.host):
        cause += (
            " For Microsoft 365, SMTP_FROM must be the mailbox of SMTP_USERNAME or "
            "one that it has Send As permission for."
        )
    return cause


def recipient_cause(recipient: str, code: int) -> str:
    if 400 <= code < 500:
        return (
            "The server deferred the recipient (a temporary failure). Try again later."
        )
    return (
        f"The recipient {recipient} was rejected: the address does not exist, or "
        "the relay does not deliver to it. Check the address."
    )


def data_cause(smtp: Smtp, code: int, reply: str) -> str:
    """Explain a message rejected after DATA."""
    if "sendasdenied" in reply.lower() or "5.2.252" in reply:
        return sender_cause(smtp, 550, reply)
    if 400 <= code < 500:
        return "The server deferred the message (a temporary failure). Try again later."
    return "The relay rejected the message itself (policy, content or size): read its reply above."


def stalled_cause(phase: str) -> str:
    return (
        f"The server stopped answering during the {phase} phase: it is overloaded, "
        "or a firewall drops the connection."
    )


def closed_cause(phase: str) -> str:
    return (
        f"The server closed the connection during the {phase} phase: it may limit "
        "connections from this address. Read the server's log, or try again later."
    )
