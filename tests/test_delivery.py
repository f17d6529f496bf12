"""Delivery over real HTTP to a mock gateway on 127.0.0.1: wire format, signatures, outcome
mapping, retries, timeouts, fallback and expiry."""

import html
import json
import time

import standardwebhooks
from psycopg.types.json import Jsonb

import psycopg
import pytest

from conftest import add_provider, deliver_due, jobs, make_due, run_worker, seed, set_chain, use_webhook
from mock_provider import ok_json

pytestmark = pytest.mark.both_hosts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def valid_sms_event():
    """The seed event with a number libphonenumber accepts (the seed's +1333363128 is too short)."""
    event = seed("sms_seed.json")
    event["user"]["phone"] = "+12125550123"
    return event


def enqueue_sms(conn, event=None):
    (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(event or valid_sms_event()),)).fetchone()
    assert answer == {}


def enqueue_email(conn, event=None):
    (answer,) = conn.execute("select mysmshook.send_email(%s)", (Jsonb(event or seed("email_seed.json")),)).fetchone()
    assert answer == {}


def test_sms_wire_format_and_signature(db, mock):
    use_webhook(db, mock.url + "/sms", "v1," + SECRET)  # Supabase shows secrets as v1,whsec_...
    enqueue_sms(db, seed("sms_auth.json"))
    before = int(time.time())
    run_worker(db)
    [job] = jobs(db)
    [req] = mock.requests
    assert req.path == "/sms"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == str(job["job_id"])
    assert before - 1 <= int(req.headers["webhook-timestamp"]) <= time.time() + 1
    # Verified by the reference Standard Webhooks library, not by our own code.
    standardwebhooks.Webhook(SECRET).verify(req.body.decode(), req.headers)
    body = req.json
    assert set(body) == {"to", "body", "app_id", "template_name", "language_tag", "template_variables"}
    assert body["to"] == "+525512345678"
    assert body["body"] == "Your code is 482913"
    assert body["app_id"] == "demo"
    assert body["template_name"] == "mfa_sms"
    assert body["language_tag"] == "en"
    assert body["template_variables"]["code"] == "482913"
    assert job["status"] == "completed" and job["provider"] == "gateway"
    assert job["finished_at"] is not None and job["locked_until"] is None


def test_email_wire_format(db, mock):
    use_webhook(db, mock.url, SECRET)
    enqueue_email(db)
    run_worker(db)
    [req] = mock.requests
    standardwebhooks.Webhook(SECRET).verify(req.body.decode(), req.headers)
    body = req.json
    assert body["to"] == "john@soupbase.io"
    assert body["subject"] == "Confirm your signup"
    link = ("http://localhost:9999/verify?token=7d5b7b1964cf5d388340a7f04f1dbb5eeb6c7b52ef8270e1737a58d0"
            "&type=signup&redirect_to=http%3A%2F%2Flocalhost%3A3000%2F")
    assert link in body["body"] and "305805" in body["body"]
    assert f'href="{link}"' in html.unescape(body["html"])  # escaped in the HTML, intact once decoded
    assert "&amp;type=signup" in body["html"]
    assert body["template_name"] == "signup_email"
    assert body["template_variables"]["confirmation_url"] == link


def test_tampered_body_fails_reference_verification(db, mock):
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    [req] = mock.requests
    tampered = req.body.decode().replace("561166", "000000")
    try:
        standardwebhooks.Webhook(SECRET).verify(tampered, req.headers)
    except standardwebhooks.webhooks.WebhookVerificationError:
        return
    raise AssertionError("a tampered body verified")


def test_completed_job_is_scrubbed(db, mock):
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    text = json.dumps(job["job_data"]) + json.dumps(job["attempts"])
    assert "561166" not in text and "+12125550123" not in text
    assert job["job_data"]["to"] == "+12*****0123"


def test_retry_then_success_with_the_same_idempotency_key(db, mock):
    answers = iter([(500, {}, b"boom"), None])
    mock.responder = lambda req: next(answers) or ok_json({"code": "ok", "message_id": "gw-42"})
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1
    assert "HTTP 500" in job["last_error"]
    # Backoff measured from the attempt itself, so a slow test machine cannot skew it.
    (wait,) = db.execute("""select extract(epoch from scheduled_at - (attempts->-1->>'at')::timestamptz)
                              from mysmshook.job_queue""").fetchone()
    assert 0.45 <= float(wait) <= 1.1  # retry_base 1s, equal jitter: 0.5..1 s
    assert job["job_data"]["code"] == "561166"  # not final: still deliverable
    make_due(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider_message_id"] == "gw-42"
    assert [r.headers["webhook-id"] for r in mock.requests] == [str(job["job_id"])] * 2
    assert [a["result"] for a in job["attempts"]] == ["retryable", "sent"]


def test_retries_run_out_and_the_job_fails(db, mock):
    mock.responder = lambda req: (503, {}, b"down")
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.max_retries = 2")
    enqueue_sms(db)
    for _ in range(3):
        make_due(db)
        run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and job["retry_count"] == 2
    assert mock.count() == 3
    assert "561166" not in json.dumps(job["job_data"])


def test_permanent_failure_fails_at_once(db, mock):
    mock.responder = lambda req: ok_json({"code": "invalid_phone_number", "description": "not a mobile"}, status=400)
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and job["retry_count"] == 0
    assert "invalid_phone_number: not a mobile" in job["last_error"]
    assert mock.count() == 1


def test_hanging_provider_costs_one_timeout_then_retries(db, mock):
    def hang(req):
        time.sleep(10)
        return ok_json({"code": "ok"})

    mock.responder = hang
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    started = time.monotonic()
    run_worker(db)
    elapsed = time.monotonic() - started
    [job] = jobs(db)
    assert elapsed < 8, f"run took {elapsed:.1f}s with http_timeout 1.5s: it waited for the answer"
    assert job["status"] == "pending" and job["retry_count"] == 1
    assert "timed out" in job["last_error"]


def test_retry_after_is_honoured(db, mock):
    mock.responder = lambda req: ok_json({"code": "rate_limited"}, status=429, headers={"retry-after": "120"})
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.sms_code_lifetime = '10min'")  # outlives the wait
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1
    (wait,) = db.execute("select extract(epoch from scheduled_at - now()) from mysmshook.job_queue").fetchone()
    assert 115 < float(wait) <= 121


def test_non_json_2xx_counts_as_delivered(db, mock):
    mock.responder = lambda req: (200, {"content-type": "text/plain"}, b"queued")
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    assert jobs(db)[0]["status"] == "completed"


def test_html_error_page_is_a_retryable_failure(db, mock):
    mock.responder = lambda req: (502, {"content-type": "text/html"}, b"<html><h1>Bad Gateway</h1></html>")
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and "HTTP 502" in job["last_error"]


def test_fallback_to_the_next_provider_in_the_same_run(db, mock):
    from mock_provider import MockProvider

    second = MockProvider()
    try:
        mock.responder = lambda req: ok_json({"code": "authentication_failed"}, status=401)
        use_webhook(db, mock.url, SECRET, name="primary")
        use_webhook(db, second.url, SECRET, name="backup", position=2)
        enqueue_sms(db)
        run_worker(db)
        [job] = jobs(db)
        assert job["status"] == "completed" and job["provider"] == "backup"
        assert "primary: authentication_failed" in job["last_error"]
        assert mock.count() == 1 and second.count() == 1
        assert [a["provider"] for a in job["attempts"]] == ["primary", "backup"]
    finally:
        second.close()


def test_expired_code_is_never_sent(db, mock):
    use_webhook(db, mock.url, SECRET)
    enqueue_sms(db)
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 second'")
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "expired" and mock.count() == 0
    assert "561166" not in json.dumps(job["job_data"])


def test_misconfigured_provider_is_reported_on_the_job(db, mock):
    # A broken row is refused when saved...
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='invalid webhook provider: setting "secret" is required'):
        add_provider(db, "broken", "webhook", {"url": "https://x"})
    # ...and one that breaks later (a Vault secret that is gone) is reported on each job.
    add_provider(db, "vaulted", "webhook", {"url": "https://x", "secret": {"vault": "hook_secret"}})
    set_chain(db, "sms", ["vaulted"])
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending"
    assert "provider vaulted: refers to Vault secret \"hook_secret\" but the Vault extension is not installed" in job["last_error"]


def test_plain_http_outside_loopback_is_refused(db, mock):
    use_webhook(db, "http://example.com/hook", SECRET)
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and "must be https" in job["last_error"]


def test_loopback_http_needs_the_development_setting(db, mock):
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.allow_http_loopback = off")
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert "allow_http_loopback" in job["last_error"] and mock.count() == 0


def test_priority_orders_codes_before_notifications(db, mock):
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.batch_size = 1")
    db.execute("set mysmshook.concurrency = 1")
    note = seed("email_seed.json")
    note["email_data"].update(email_action_type="password_changed_notification", token="", token_hash="")
    enqueue_email(db, note)
    enqueue_sms(db)
    enqueue_sms(db, seed("sms_auth.json"))  # MFA
    deliver_due(db)  # one job per run (batch_size 1)
    order = [r.json["template_name"] for r in mock.requests]
    assert order == ["mfa_sms", "sms_sms", "password_changed_notification_email"]


def test_invalid_number_fails_at_once_without_a_request(db, mock):
    """The hook refuses such numbers; a job queued while its prefix was accepted (the setting
    changed since) still fails at delivery without a request."""
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.accepted_number_prefixes = '+1333'")
    enqueue_sms(db, seed("sms_seed.json"))  # +1333363128: +1 and only nine digits
    db.execute("reset mysmshook.accepted_number_prefixes")
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and mock.count() == 0
    # Masked: last_error outlives the scrubbing of job_data.
    assert job["last_error"] == "phone number +13****3128 is not a valid number for its country (libphonenumber)"


@pytest.mark.single_host("the log provider writes to the server log (mysmshook-worker's goes to its own)")
def test_a_fresh_install_does_not_pass_the_server_log_off_as_delivery(cluster, db):
    """The default route goes to the log provider. Unless mysmshook.log_sink is on (the demo,
    development), nothing is marked delivered: the job waits and says what to configure."""
    db.execute("set mysmshook.log_sink = off")
    enqueue_sms(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1
    assert "mysmshook.log_sink is off" in job["last_error"] and "route this channel to a real provider" in job["last_error"]
    db.execute("set mysmshook.log_sink = on")
    make_due(db)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "log"
    status = db.execute("select status, jobs, to_server_log from mysmshook.queue_status").fetchall()
    assert status == [("completed", 1, 1)]
    assert "nobody received this" in cluster.log()

