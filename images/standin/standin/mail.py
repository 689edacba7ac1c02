"""`ak test_email ADDRESS`: send one mail with the AUTHENTIK_EMAIL__* settings.

Like authentik's Django mail backend, TLS verifies the server certificate
against the system's CA bundle, which SSL_CERT_FILE can replace.
"""

import contextlib
import smtplib
import socket
import ssl
from email.message import EmailMessage

from standin import config, version


def message(settings: config.Email, address: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.sender
    mail["To"] = address
    mail["Subject"] = "authentik test email"
    mail.set_content(
        f"This is a test email from authentik (stand-in {version()}, "
        f"instance {socket.gethostname()}).\n"
    )
    return mail


def open_connection(settings: config.Email) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if settings.use_ssl:
        return smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    if settings.use_tls:
        connection.starttls(context=context)
    return connection


def send(address: str) -> int:
    settings = config.email()
    mode = (
        "implicit TLS"
        if settings.use_ssl
        else "STARTTLS"
        if settings.use_tls
        else "plain"
    )
    target = f"{settings.host}:{settings.port} ({mode})"
    try:
        connection = open_connection(settings)
        try:
            if settings.username:
                connection.login(settings.username, settings.password)
            connection.send_message(message(settings, address))
        finally:
            with contextlib.suppress(smtplib.SMTPException):
                connection.quit()
    except (smtplib.SMTPException, OSError) as error:
        print(
            f"failed to send a test email to {address} via {target}: {type(error).__name__}: {error}"
        )
        return 1
    print(f"sent a test email to {address} via {target} from {settings.sender}")
    return 0
