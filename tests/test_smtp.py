"""The smtp provider against a real SMTP server on loopback (aiosmtpd): STARTTLS, implicit TLS,
AUTH, the message as it arrives, and what each kind of failure does to the job."""

import time

import pytest

from conftest import add_provider, jobs, run_worker, seed, set_chain
from mock_smtp import CLOSE, HANG, MockSmtp
from test_providers import enqueue

USER, PASSWORD = "mailer", "s3cret"


@pytest.fixture
def smtp_servers(tmp_path):
    made = []

    def make(**kwargs):
        directory = tmp_path / f"certs{len(made)}"
        directory.mkdir()
        server = MockSmtp(directory, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def add_smtp(conn, server, name="smtp", **overrides):
    settings = {"host": "127.0.0.1", "port": server.port, "from": "Acme <auth@acme.test>",
                "reply_to": "support@acme.test", "username": USER, "password": PASSWORD,
                "ca_certificate": server.ca_pem}
    settings.update(overrides)
    add_provider(conn, name, "smtp", {k: v for k, v in settings.items() if v is not None})
    set_chain(conn, "email", [name])


def test_starttls_auth_and_the_message_as_it_arrives(db, smtp_servers):
    server = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
    add_smtp(db, server)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed", job["last_error"]
    [mail] = server.delivered
    assert (mail.mail_from, mail.rcpt_tos) == ("auth@acme.test", ["john@soupbase.io"])
    assert mail.authenticated_as == USER and mail.tls
    assert server.auth_attempts == [(USER, True)]
    msg = mail.message
    assert msg["From"] == "Acme <auth@acme.test>" and msg["To"] == "john@soupbase.io"
    assert msg["Reply-To"] == "support@acme.test" and msg["Subject"] == "Confirm your signup"
    assert msg["Message-ID"] == f"<{job['job_id']}@acme.test>"
    assert job["provider_message_id"] == f"{job['job_id']}@acme.test"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "305805" in text and "305805" in html and "<" in html


def test_implicit_tls(db, smtp_servers):
    server = smtp_servers(tls="implicit", credentials=(USER, PASSWORD))
    add_smtp(db, server, tls="implicit")
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed", job["last_error"]
    assert len(server.delivered) == 1 and server.delivered[0].tls


def test_recipient_refused_fails_the_job(db, smtp_servers):
    server = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
    server.rcpt["john@soupbase.io"] = "550 5.1.1 <john@soupbase.io>: Recipient address rejected"
    add_smtp(db, server)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and "SMTP 550" in job["last_error"], job["last_error"]
    assert server.delivered == []


@pytest.mark.parametrize("answer,error", [
    ("451 4.3.0 Temporary local problem", "SMTP 451"),
    (HANG, "timed out"),
    (CLOSE, "SMTP:"),
])
def test_temporary_failures_are_retried(db, smtp_servers, answer, error):
    server = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
    server.data = lambda envelope: answer
    add_smtp(db, server)
    enqueue(db, "send_email", seed("email_seed.json"))
    started = time.monotonic()
    run_worker(db)
    elapsed = time.monotonic() - started
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1, job
    assert error in job["last_error"], job["last_error"]
    # mysmshook.http_timeout is 1.5 s in the suite: a server that hangs costs about that.
    assert elapsed < 10
    # The same message and Message-ID go out again on the retry.
    server.data = lambda envelope: None
    db.execute("update mysmshook.job_queue set scheduled_at = now()")
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["retry_count"] == 1
    assert server.delivered[0].message["Message-ID"] == f"<{job['job_id']}@acme.test>"


def test_a_session_is_over_by_the_timeout_as_a_request_is(db, smtp_servers):
    """A server slow at every step (0.6 s, each under the suite's 1.5 s http_timeout) would take
    the message about 1.8 s in, after the worker's lease assumed the exchange over: lettre bounds
    each read and write, not the session. The session gets http_timeout in all: the message is
    not handed over after it, and the job is retried."""
    server = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
    server.step_delay = 0.6
    add_smtp(db, server)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1, job
    assert "SMTP server timed out" in job["last_error"], job["last_error"]
    assert job["attempts"][-1]["ms"] < 1500 + 300, job["attempts"]
    time.sleep(1)
    assert server.delivered == []
    server.step_delay = 0
    db.execute("update mysmshook.job_queue set scheduled_at = now()")
    run_worker(db)
    assert jobs(db)[0]["status"] == "completed" and len(server.delivered) == 1


def test_wrong_password_is_the_providers_failure_and_the_next_one_delivers(db, smtp_servers):
    bad = smtp_servers(tls="starttls", credentials=(USER, "other"))
    good = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
    add_smtp(db, bad, name="relay_a")
    add_smtp(db, good, name="relay_b")
    set_chain(db, "email", ["relay_a", "relay_b"])
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "relay_b"
    assert "authentication failed" in job["attempts"][0]["error"], job["attempts"]
    assert bad.delivered == [] and len(good.delivered) == 1


@pytest.mark.parametrize("case", ["no STARTTLS offered", "certificate not trusted"])
def test_nothing_goes_out_unencrypted_or_to_an_untrusted_server(db, smtp_servers, case):
    if case == "no STARTTLS offered":
        server = smtp_servers(tls="none", credentials=(USER, PASSWORD))
        add_smtp(db, server)
    else:
        server = smtp_servers(tls="starttls", credentials=(USER, PASSWORD))
        add_smtp(db, server, ca_certificate=None)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["last_error"], job
    assert server.delivered == [] and server.auth_attempts == []  # not even the credentials


def test_plain_smtp_only_to_loopback_in_development(db, smtp_servers):
    server = smtp_servers(tls="none")
    add_smtp(db, server, tls="none", username=None, password=None, ca_certificate=None)
    enqueue(db, "send_email", seed("email_seed.json"))
    db.execute("set mysmshook.allow_http_loopback = off")
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] != "completed" and "allow_http_loopback" in job["last_error"], job
    assert server.delivered == []
    db.execute("reset mysmshook.allow_http_loopback")
    db.execute("update mysmshook.job_queue set status = 'pending', scheduled_at = now()")
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and len(server.delivered) == 1
    assert not server.delivered[0].tls and server.delivered[0].authenticated_as is None


def test_settings_are_checked_when_saved(db):
    with pytest.raises(Exception, match="only for a loopback host"):
        add_provider(db, "relay", "smtp", {"host": "smtp.example.com", "from": "a@acme.test", "tls": "none"})
