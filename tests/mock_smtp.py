"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records every message and answers as told.

`tls` is "starttls" (offered and required, AUTH only after it), "implicit" (TLS from the first
byte) or "none". Credentials, when given, are required. Each test may set `rcpt` (address ->
reply, None for 250) and `data` (envelope -> reply, or HANG / CLOSE).
"""

import asyncio
import email
import email.policy
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

HANG = "hang"    # never answer the end of DATA
CLOSE = "close"  # close the connection once the data is in, before answering it


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list
    raw: bytes
    authenticated_as: str | None
    tls: bool

    @property
    def message(self):
        return email.message_from_bytes(self.raw, policy=email.policy.default)


def make_ca_and_cert(directory: Path):
    """A private CA and a certificate for 127.0.0.1 that it signed (openssl)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mysmshook test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return (directory / "ca.pem").read_text(), directory / "server.pem", directory / "server.key"


class MockSmtp:
    def __init__(self, cert_dir: Path, tls="starttls", credentials=None):
        self.delivered: list[Delivered] = []
        self.connections = 0
        self.auth_attempts = []  # (login, over TLS)
        self.rcpt = {}
        self.data = lambda envelope: None
        self.step_delay = 0.0  # seconds before answering each EHLO and RCPT: a slow server
        self.lock = threading.Lock()
        self.ca_pem, cert, key = make_ca_and_cert(cert_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        mock = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                await asyncio.sleep(mock.step_delay)
                with mock.lock:
                    mock.connections += 1
                session.host_name = hostname
                return responses

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                await asyncio.sleep(mock.step_delay)
                reply = mock.rcpt.get(address)
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                reply = mock.data(envelope)
                if reply == HANG:
                    await asyncio.sleep(3600)
                if reply == CLOSE:
                    session.loop.call_soon(server.transport.close)
                    await asyncio.sleep(3600)
                if reply:
                    return reply
                with mock.lock:
                    mock.delivered.append(Delivered(
                        envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                        session.authenticated and session.auth_data.login.decode(),
                        server.transport.get_extra_info("ssl_object") is not None))
                return "250 2.0.0 Ok: queued as MOCK1"

        def authenticator(server, session, envelope, mechanism, auth_data):
            with mock.lock:
                mock.auth_attempts.append((auth_data.login.decode(),
                                           server.transport.get_extra_info("ssl_object") is not None))
            ok = credentials and (auth_data.login.decode(), auth_data.password.decode()) == credentials
            return AuthResult(success=bool(ok), handled=False, auth_data=auth_data if ok else None)

        params = {}
        if credentials:
            params.update(authenticator=authenticator, auth_required=True, auth_require_tls=tls == "starttls")
        if tls == "starttls":
            params.update(tls_context=context, require_starttls=True)
        from conftest import free_port
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     ssl_context=context if tls == "implicit" else None,
                                     server_hostname="127.0.0.1", **params)
        self.controller.start()

    def close(self):
        self.controller.stop()
