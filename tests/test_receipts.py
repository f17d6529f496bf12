"""Delivery receipts: callbacks signed by the providers' own libraries (Twilio's
RequestValidator, Svix for Resend, Standard Webhooks for the gateway) handed to
mysmshook.receive_receipt, and what they do to the job."""

import datetime
import json
import time
import urllib.parse

import psycopg
import pytest
from psycopg.types.json import Jsonb
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook
from twilio.request_validator import RequestValidator

from conftest import REMOTE_ROLE, add_provider, jobs, run_worker, seed, set_chain
from mock_provider import ok_json
from test_providers import SID, TOKEN, add_twilio, enqueue, mocks, sms_event  # noqa: F401 (fixture)

pytestmark = pytest.mark.both_hosts

CALLBACK_URL = "https://acme.test/functions/v1/receipts?provider={}"
RESEND_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GATEWAY_SECRET = "whsec_bm90IHRoZSByZXNlbmQgc2VjcmV0IGF0IGFsbA=="


def created(sid):
    return ok_json({"sid": sid, "status": "queued"}, status=201)


def twilio_callback(db, provider, sid, status, error_code=None, token=TOKEN):
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": SID, "To": "+12125550123"}
    if error_code:
        params["ErrorCode"] = error_code
    url = CALLBACK_URL.format(provider)
    signature = RequestValidator(token).compute_signature(url, params)
    (answer,) = db.execute("select mysmshook.receive_receipt(%s, %s, %s, %s)", (
        provider, url, Jsonb({"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}),
        urllib.parse.urlencode(params))).fetchone()
    return answer


def signed_event(db, provider, library, prefix, event, msg_id="msg_1", at=None):
    body = json.dumps(event)
    at = at or datetime.datetime.now(tz=datetime.timezone.utc)
    headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(int(at.timestamp())),
               f"{prefix}-signature": library.sign(msg_id, at, body)}
    (answer,) = db.execute("select mysmshook.receive_receipt(%s, %s, %s, %s)",
                           (provider, CALLBACK_URL.format(provider), Jsonb(headers), body)).fetchone()
    return answer


def receipts_of(job):
    return [a for a in job["attempts"] if a.get("result") == "receipt"]


def test_twilio_delivered_sets_delivered_at_and_joins_the_timeline(db, mocks):
    mock = mocks(lambda req: created("SM0000000000000000000000000000000a"))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    assert twilio_callback(db, "twilio", "SM0000000000000000000000000000000a", "sent")["job_id"]
    answer = twilio_callback(db, "twilio", "SM0000000000000000000000000000000a", "delivered")
    [job] = jobs(db)
    assert answer["job_id"] == str(job["job_id"]) and not answer["duplicate"]
    assert job["status"] == "completed" and job["delivered_at"] is not None
    assert [r["status"] for r in receipts_of(job)] == ["sent", "delivered"]
    # Twilio repeats a status now and then: recorded once.
    assert twilio_callback(db, "twilio", "SM0000000000000000000000000000000a", "delivered")["duplicate"]
    assert len(receipts_of(jobs(db)[0])) == 2


def test_forged_and_misdirected_callbacks_are_refused(db, mocks):
    mock = mocks(lambda req: created("SM0000000000000000000000000000000b"))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification, match="X-Twilio-Signature"):
        twilio_callback(db, "twilio", "SM0000000000000000000000000000000b", "undelivered", "30003",
                        token="not the token")
    db.rollback() if not db.autocommit else None
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no provider"):
        twilio_callback(db, "nobody", "SM0000000000000000000000000000000b", "undelivered")
    [job] = jobs(db)
    assert job["status"] == "completed" and receipts_of(job) == []
    (count,) = db.execute("select count(*) from mysmshook.receipts").fetchone()
    assert count == 0


STATUS_CALLBACK = "https://acme.test/functions/v1/receipts?provider=wa"


def test_whatsapp_undelivered_moves_a_live_code_to_sms(db, mocks):
    whatsapp = mocks(lambda req: created("SM00000000000000000000000000000wa1"))
    sms = mocks(lambda req: created("SM0000000000000000000000000000sms1"))
    add_twilio(db, "wa", whatsapp, kind="twilio_whatsapp", status_callback=STATUS_CALLBACK)
    add_twilio(db, "sms", sms)
    set_chain(db, "sms", ["wa", "sms"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["provider"] == "wa" and job["fallback_data"]["code"] == "482913"
    assert "code" not in job["job_data"]  # the job's own data is scrubbed as always

    twilio_callback(db, "wa", "SM00000000000000000000000000000wa1", "undelivered", "63024")
    [job] = jobs(db)
    assert job["status"] == "pending" and job["fallback_data"] is None
    assert "wa reported it undelivered" in job["last_error"] and "63024" in job["last_error"]
    assert job["job_data"]["skip_providers"] == ["wa"]
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "sms" and job["channel"] == "sms"
    assert len(whatsapp.requests) == 1 and len(sms.requests) == 1
    assert "482913" in dict(urllib.parse.parse_qsl(sms.requests[0].body.decode()))["Body"]
    assert job["fallback_data"] is None and job["retry_count"] == 0  # the last provider: nothing to keep
    assert "code" not in job["job_data"]


def test_undelivered_with_nothing_left_or_a_dead_code_fails_the_job(db, mocks):
    whatsapp = mocks(lambda req: created("SM00000000000000000000000000000wa2"))
    sms = mocks(lambda req: created("SM0000000000000000000000000000sms2"))
    add_twilio(db, "wa", whatsapp, kind="twilio_whatsapp", status_callback=STATUS_CALLBACK)
    add_twilio(db, "sms", sms)
    set_chain(db, "sms", ["wa", "sms"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 second'")
    twilio_callback(db, "wa", "SM00000000000000000000000000000wa2", "failed", "63016")
    [job] = jobs(db)
    assert job["status"] == "failed" and "63016" in job["last_error"] and job["fallback_data"] is None
    run_worker(db)
    assert len(sms.requests) == 0

    # The only provider: nothing to fall back to.
    db.execute("truncate mysmshook.job_queue")
    set_chain(db, "sms", ["sms"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["fallback_data"] is None
    twilio_callback(db, "sms", "SM0000000000000000000000000000sms2", "undelivered", "30005")
    [job] = jobs(db)
    assert job["status"] == "failed" and "30005" in job["last_error"]


def test_no_copy_of_the_code_is_kept_when_no_receipt_can_come(db, mocks):
    """Without a status callback Twilio never reports: the code is scrubbed as always."""
    whatsapp = mocks(lambda req: created("SM00000000000000000000000000000wa3"))
    sms = mocks(lambda req: created("SM0000000000000000000000000000sms3"))
    add_twilio(db, "wa", whatsapp, kind="twilio_whatsapp")
    add_twilio(db, "sms", sms)
    set_chain(db, "sms", ["wa", "sms"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["provider"] == "wa" and job["fallback_data"] is None


def test_two_receipts_delivered_then_failed_send_nothing_again(db, mocks):
    """Resend's delivered then bounced for one email, applied in one call: the second sees the
    first (the job is read again, locked, for each receipt)."""
    first = mocks(lambda req: ok_json({"id": "6ef9a417-02e9-4d39-ad75-9611e0fcc33c"}))
    second = mocks(lambda req: ok_json({"id": "other"}))
    add_resend(db, first)
    add_provider(db, "resend2", "resend", {"api_key": "re_2", "from": "Acme <auth@acme.test>",
                                           "base_url": second.url})
    set_chain(db, "email", ["resend", "resend2"])
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["provider"] == "resend" and job["fallback_data"] is not None
    # Both verified receipts arrived while a worker held the job (so neither was applied yet).
    for event_id, status, outcome in [("msg_d", "email.delivered", "delivered"),
                                      ("msg_b", "email.bounced", "failed")]:
        db.execute("insert into mysmshook.receipts (provider, message_id, event_id, status, outcome, error) "
                   "values ('resend', '6ef9a417-02e9-4d39-ad75-9611e0fcc33c', %s, %s, %s, 'late bounce')",
                   (event_id, status, outcome))
    (applied,) = db.execute("select mysmshook.apply_receipts()").fetchone()
    assert applied == 2
    [job] = jobs(db)
    assert job["status"] == "completed" and job["delivered_at"] is not None and job["fallback_data"] is None
    run_worker(db)
    assert len(first.requests) == 1 and len(second.requests) == 0


def test_the_fallback_skips_only_the_providers_that_took_the_message(db, mocks):
    """Both providers failed on the first run; WhatsApp took it on the second and then reported
    it undelivered: SMS, which never took it, still gets its turn."""
    answers = {"wa": [(500, {}, b"{}"), created("SM00000000000000000000000000000wa4")],
               "sms": [(500, {}, b"{}"), created("SM0000000000000000000000000000sms4")]}
    whatsapp = mocks(lambda req: answers["wa"].pop(0))
    sms = mocks(lambda req: answers["sms"].pop(0))
    add_twilio(db, "wa", whatsapp, kind="twilio_whatsapp", status_callback=STATUS_CALLBACK)
    add_twilio(db, "sms", sms)
    set_chain(db, "sms", ["wa", "sms"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    assert jobs(db)[0]["status"] == "pending"
    db.execute("update mysmshook.job_queue set scheduled_at = now()")
    run_worker(db)
    assert jobs(db)[0]["provider"] == "wa"
    twilio_callback(db, "wa", "SM00000000000000000000000000000wa4", "undelivered", "63024")
    assert jobs(db)[0]["job_data"]["skip_providers"] == ["wa"]
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "sms"
    assert len(whatsapp.requests) == 2 and len(sms.requests) == 2


def test_a_receipt_before_the_outcome_waits_for_the_job(db, mocks):
    mock = mocks(lambda req: created("SM0000000000000000000000000000000c"))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    # Twilio called back before the worker recorded the sid.
    answer = twilio_callback(db, "twilio", "SM0000000000000000000000000000000c", "delivered")
    assert answer["job_id"] is None and not answer["duplicate"]
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["delivered_at"] is None
    run_worker(db)  # every run applies the receipts that can now be applied
    [job] = jobs(db)
    assert job["delivered_at"] is not None and [r["status"] for r in receipts_of(job)] == ["delivered"]


def add_resend(db, mock):
    add_provider(db, "resend", "resend", {"api_key": "re_123456789", "from": "Acme <auth@acme.test>",
                                          "base_url": mock.url, "webhook_secret": RESEND_SECRET})
    set_chain(db, "email", ["resend"])


def test_resend_webhooks_signed_by_svix(db, mocks):
    mock = mocks(lambda req: ok_json({"id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"}))
    add_resend(db, mock)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    svix = SvixWebhook(RESEND_SECRET)
    bounced = {"type": "email.bounced", "created_at": "2026-11-28T10:00:00.000Z", "data": {
        "email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "to": ["john@soupbase.io"],
        "bounce": {"message": "The recipient's mailbox does not exist", "type": "Permanent", "subType": "General"}}}
    answer = signed_event(db, "resend", svix, "svix", bounced, msg_id="msg_bounce")
    [job] = jobs(db)
    assert answer["job_id"] == str(job["job_id"])
    assert job["status"] == "failed" and "Permanent bounce" in job["last_error"]
    # A replay of the same event is recorded once; a stale or forged one is refused.
    assert signed_event(db, "resend", svix, "svix", bounced, msg_id="msg_bounce")["duplicate"]
    old = datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification, match="timestamp"):
        signed_event(db, "resend", svix, "svix", bounced, msg_id="msg_old", at=old)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification, match="signature"):
        signed_event(db, "resend", SvixWebhook(GATEWAY_SECRET), "svix", bounced, msg_id="msg_forged")
    assert len(receipts_of(jobs(db)[0])) == 1


def test_resend_delivered(db, mocks):
    mock = mocks(lambda req: ok_json({"id": "5ef9a417-02e9-4d39-ad75-9611e0fcc33c"}))
    add_resend(db, mock)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    delivered = {"type": "email.delivered", "created_at": "2026-11-28T10:00:00.000Z",
                 "data": {"email_id": "5ef9a417-02e9-4d39-ad75-9611e0fcc33c"}}
    signed_event(db, "resend", SvixWebhook(RESEND_SECRET), "svix", delivered)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["delivered_at"] is not None


def test_gateway_callbacks_signed_with_standard_webhooks(db, mocks):
    mock = mocks(lambda req: ok_json({"code": "ok", "message_id": "gw-42"}))
    add_provider(db, "gateway", "webhook", {"url": mock.url, "secret": GATEWAY_SECRET, "app_id": "demo"})
    set_chain(db, "sms", ["gateway"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    event = {"type": "message.status", "data": {"message_id": "gw-42", "status": "failed",
                                                 "error": "carrier rejected the message"}}
    signed_event(db, "gateway", StandardWebhook(GATEWAY_SECRET), "webhook", event, msg_id="evt_1")
    [job] = jobs(db)
    assert job["status"] == "failed" and "carrier rejected" in job["last_error"]


@pytest.mark.single_host("no worker runs")
def test_providers_whose_receipts_are_not_read_say_so(db):
    add_provider(db, "vonage", "vonage", {"api_key": "k", "api_secret": "s", "from": "Acme"})
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not read by this version"):
        db.execute("select mysmshook.receive_receipt('vonage', 'https://x', '{}', 'a=b')")


@pytest.mark.single_host("no worker runs")
def test_only_the_owner_may_hand_in_receipts(db):
    (executable,) = db.execute(
        "select has_function_privilege('app_user', 'mysmshook.receive_receipt(text, text, jsonb, text)', 'execute')"
    ).fetchone()
    assert not executable


# Receipts nobody sent: account-wide webhooks and status callbacks (Resend, Twilio) bring
# receipts for the account's other mail and SMS, up to a day of them.
FOREIGN = 200_000
# sql/receipts.sql, apply_receipts: how many receipts a run probes at most.
PROBE_BATCH = 10_000


def receipt_reads(db, *others):
    """Tuples of mysmshook.receipts read (table and indexes) and rows written, over all backends,
    once `db` and the `others` connections have flushed their statistics, and mysmshook-worker's
    sessions have ended (a backend flushes its statistics as it exits, after its client left)."""
    for _ in range(200):
        (sessions,) = db.execute("select count(*) from pg_stat_activity where usename = %s and datname = current_database()",
                                 (REMOTE_ROLE,)).fetchone()
        if not sessions:
            break
        time.sleep(0.05)
    else:
        pytest.fail("mysmshook-worker's session did not end")
    for conn in (db, *others):
        conn.execute("select pg_stat_force_next_flush()")
    return db.execute("""
        select t.seq_tup_read + (select coalesce(sum(i.idx_tup_read), 0)
                                   from pg_stat_user_indexes i where i.relid = t.relid),
               t.n_tup_upd + t.n_tup_del
          from pg_stat_user_tables t where t.relid = 'mysmshook.receipts'::regclass""").fetchone()


def probe_passed(db, message_id):
    """Whether the runs' probe has passed (set aside, unless its job was there) the receipt."""
    (passed,) = db.execute("""
        select (p.probed_by, p.probed_id) >= (r.recorded_by, r.receipt_id)
          from mysmshook.receipt_probe p, mysmshook.receipts r where r.message_id = %s""",
                           (message_id,)).fetchone()
    return passed


@pytest.mark.slow
def test_receipts_for_other_messages_cost_runs_and_callbacks_a_bounded_read(cluster, db, mocks):
    """200,000 receipts for messages that are not ours, and the worker's role has a
    statement_timeout of 2 s. The run delivers: it used to time out at its start, where
    apply_receipts() locked every waiting receipt and probed each for a job. A callback for our
    message reads its own receipt, not all of them, and applies it at once. Each foreign receipt
    is probed once (the first run's batch, not settled yet, twice), at most PROBE_BATCH per run,
    never written; once they are set aside, a run reads none of them. ANALYZE last saw only
    applied receipts: the planner takes the burst for a few rows (a plan that joins it with
    itself reads it once per row)."""
    sid = "SM0000000000000000000000000000000f"
    mock = mocks(lambda req: created(sid))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    db.execute("""insert into mysmshook.receipts (provider, message_id, event_id, status, outcome, applied_at)
                  select 'twilio', 'SM' || i, 'SM' || i, 'delivered', 'delivered', now()
                    from generate_series(1, 1000) i""")
    db.execute("analyze mysmshook.receipts")
    db.execute("delete from mysmshook.receipts")
    # Kept stale for the whole test: autovacuum would analyze the burst after a few runs.
    db.execute("alter table mysmshook.receipts set (autovacuum_enabled = off)")
    db.execute("""insert into mysmshook.receipts (provider, message_id, event_id, status, outcome, received_at)
                  select 'twilio', 'SM' || md5(i::text), 'SM' || md5(i::text) || '/delivered', 'delivered',
                         'delivered', now() - i * interval '400 milliseconds'
                    from generate_series(1, %s) i""", (FOREIGN,))
    worker = cluster.connect()
    try:
        worker.execute("set statement_timeout = '2s'")
        enqueue(db, "send_sms", sms_event("+12125550123"))
        reads, writes = receipt_reads(db, worker)
        run_worker(worker)
        [job] = jobs(db)
        assert job["status"] == "completed" and job["provider_message_id"] == sid
        now_reads, now_writes = receipt_reads(db, worker)
        assert now_reads - reads <= PROBE_BATCH + 100 and now_writes == writes
        total = now_reads - reads

        db.execute("select pg_stat_force_next_flush()")
        with db.transaction():
            answer = twilio_callback(db, "twilio", sid, "delivered")
            (read,) = db.execute("""select seq_tup_read + coalesce(idx_tup_fetch, 0) from pg_stat_xact_user_tables
                                     where relid = 'mysmshook.receipts'::regclass""").fetchone()
        assert answer["job_id"] == str(job["job_id"]) and read < 10, read
        [job] = jobs(db)
        assert job["delivered_at"] is not None and [r["status"] for r in receipts_of(job)] == ["delivered"]

        reads, writes = receipt_reads(db, worker)
        for run in range(2, FOREIGN // PROBE_BATCH + 6):
            run_worker(worker)
            now_reads, now_writes = receipt_reads(db, worker)
            read, reads = now_reads - reads, now_reads
            assert read <= PROBE_BATCH + 100, f"run {run} read {read} receipts"
            assert now_writes == writes, f"run {run} wrote receipts"
            total += read
            if read == 0:
                break
        else:
            pytest.fail(f"{run} runs did not set the foreign receipts aside")
        assert total <= FOREIGN + 2 * PROBE_BATCH, total
        run_worker(worker)
        assert receipt_reads(db, worker) == (reads, writes)  # no run reads them again
        (waiting,) = db.execute("select count(*) from mysmshook.receipts where applied_at is null").fetchone()
        assert waiting == FOREIGN  # kept, for a day
    finally:
        db.execute("alter table mysmshook.receipts reset (autovacuum_enabled)")
        worker.close()


def test_a_receipt_set_aside_is_applied_once_its_job_records_the_message_id(db, mocks):
    """The runs set a receipt aside when no job has its message id; a job that records the id
    later marks it, and the next run applies it."""
    sid = "SM0000000000000000000000000000000d"
    mock = mocks(lambda req: created(sid))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    assert twilio_callback(db, "twilio", sid, "delivered")["job_id"] is None
    for _ in range(4):  # passed once settled: by the second run at the latest
        run_worker(db)
        if probe_passed(db, sid):
            break
    assert probe_passed(db, sid)
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["provider_message_id"] == sid and job["delivered_at"] is None
    run_worker(db)
    [job] = jobs(db)
    assert job["delivered_at"] is not None and [r["status"] for r in receipts_of(job)] == ["delivered"]


def test_a_receipt_is_not_set_aside_while_its_message_id_is_being_recorded(cluster, db, mocks):
    """The callback and the transaction that records its message id on the job run at once, and
    neither sees what the other has not committed: the runs meanwhile do not set the receipt
    aside, and the first run after the recording commits applies it."""
    first, second = "SM00000000000000000000000000000r1a", "SM00000000000000000000000000000r2a"
    mock = mocks(lambda req: created(first))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    recording = cluster.connect(autocommit=False)
    try:
        # What record_outcomes does with a message id, not committed yet.
        recording.execute("update mysmshook.job_queue set provider_message_id = %s where job_id = %s",
                          (second, job["job_id"]))
        assert twilio_callback(db, "twilio", second, "delivered")["job_id"] is None
        for _ in range(3):
            run_worker(db)
        assert not probe_passed(db, second)
        recording.commit()
    finally:
        recording.close()
    assert jobs(db)[0]["delivered_at"] is None
    run_worker(db)
    [job] = jobs(db)
    assert job["delivered_at"] is not None and [r["status"] for r in receipts_of(job)] == ["delivered"]


def test_a_receipt_whose_job_is_held_is_applied_by_the_next_run(cluster, db, mocks):
    """The callback never waits for a job another transaction holds: its receipt is applied by
    the next run."""
    sid = "SM0000000000000000000000000000000h"
    mock = mocks(lambda req: created(sid))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    holder = cluster.connect(autocommit=False)
    try:
        holder.execute("select 1 from mysmshook.job_queue where job_id = %s for update", (job["job_id"],))
        assert twilio_callback(db, "twilio", sid, "delivered")["job_id"] == str(job["job_id"])
        assert jobs(db)[0]["delivered_at"] is None
    finally:
        holder.rollback()
        holder.close()
    run_worker(db)
    [job] = jobs(db)
    assert job["delivered_at"] is not None and [r["status"] for r in receipts_of(job)] == ["delivered"]
