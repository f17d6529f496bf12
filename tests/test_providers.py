"""Twilio SMS, Twilio WhatsApp and Resend against mock servers on 127.0.0.1: exact wire format
(validated against the official OpenAPI descriptions), error mapping, routing and fallback,
templates, concurrency, rate limits and secrets."""

import base64
import json
import time
import urllib.parse

import psycopg
import pytest
from psycopg.types.json import Jsonb

import openapi_check
from conftest import add_provider, jobs, make_due, run_worker, seed, set_chain
from mock_provider import MockProvider, ok_json

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "tok_9f8e7d6c5b4a"
TWILIO_CREATED = ok_json({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}, status=201)


def twilio_error(code, status, headers=None):
    return ok_json({"code": code, "message": f"error {code}", "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}, status=status, headers=headers)


@pytest.fixture
def mocks():
    made = []

    def make(responder=None):
        m = MockProvider()
        if responder:
            m.responder = responder
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def sms_event(phone, otp="482913", locale=None):
    event = seed("sms_seed.json")
    event["user"]["phone"] = phone
    event["sms"]["otp"] = otp
    if locale:
        event["user"]["user_metadata"] = {"locale": locale}
    return event


def enqueue(conn, hook, event):
    (answer,) = conn.execute(f"select mysmshook.{hook}(%s)", (Jsonb(event),)).fetchone()
    assert answer == {}, answer


def form(recorded):
    return urllib.parse.parse_qsl(recorded.body.decode(), keep_blank_values=True)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def add_twilio(conn, name, mock, kind="twilio", **settings):
    base = {"account_sid": SID, "auth_token": TOKEN, "base_url": mock.url}
    if "messaging_service_sid" not in settings:
        base["from"] = "+15005550006"
    add_provider(conn, name, kind, dict(base, **settings))


def add_latam_route(conn, providers):
    conn.execute(
        """insert into mysmshook.routes (name, channel, position, regions, providers)
           values ('latam', 'sms', 10, mysmshook.latin_america_regions(), %s)""",
        (providers,),
    )


# --- Twilio -------------------------------------------------------------------------------

def test_twilio_sms_wire_format(db, mocks):
    mock = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "twilio", mock, validity_period=600, status_callback="https://example.com/status")
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [req] = mock.requests
    assert req.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.headers["authorization"] == basic(SID, TOKEN)
    # ValidityPeriod: the code's remaining life (an SMS code lives 60 s), below the configured 600.
    fields = form(req)
    assert fields[:4] == [("To", "+12125550123"), ("From", "+15005550006"), ("Body", "Your code is 482913"),
                          ("StatusCallback", "https://example.com/status")]
    assert fields[4][0] == "ValidityPeriod" and 55 <= int(fields[4][1]) <= 60, fields
    openapi_check.validate("twilio", req)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "twilio" and job["channel"] == "sms"
    assert job["provider_message_id"] == "SM0123456789abcdef0123456789abcdef"
    assert (job["sms_encoding"], job["sms_segments"], job["route"]) == ("GSM-7", 1, "sms")


def test_twilio_api_key_and_messaging_service(db, mocks):
    mock = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "twilio", mock, api_key_sid="SK0123456789abcdef0123456789abcdef", api_key_secret="keysecret",
               messaging_service_sid="MG0123456789abcdef0123456789abcdef")
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+447400123456"))
    run_worker(db)
    [req] = mock.requests
    assert req.headers["authorization"] == basic("SK0123456789abcdef0123456789abcdef", "keysecret")
    assert dict(form(req))["MessagingServiceSid"] == "MG0123456789abcdef0123456789abcdef"
    assert "From" not in dict(form(req))
    openapi_check.validate("twilio", req)


def test_whatsapp_content_template_for_latin_america(db, mocks):
    wa = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "whatsapp", wa, kind="twilio_whatsapp", content_sid="HX0123456789abcdef0123456789abcdef",
               content_variables={"1": "{{ code }}"})
    add_twilio(db, "sms-twilio", mocks())
    add_latam_route(db, ["whatsapp", "sms-twilio"])
    enqueue(db, "send_sms", sms_event("+525512345678"))
    run_worker(db)
    [req] = wa.requests
    fields = dict(form(req))
    assert fields["To"] == "whatsapp:+525512345678" and fields["From"] == "whatsapp:+15005550006"
    assert fields["ContentSid"] == "HX0123456789abcdef0123456789abcdef"
    assert json.loads(fields["ContentVariables"]) == {"1": "482913"}
    assert "Body" not in fields
    openapi_check.validate("twilio", req)
    [job] = jobs(db)
    assert (job["status"], job["channel"], job["route"], job["provider"]) == ("completed", "whatsapp", "latam", "whatsapp")


def test_whatsapp_free_form_body(db, mocks):
    wa = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "whatsapp", wa, kind="twilio_whatsapp")
    add_latam_route(db, ["whatsapp"])
    enqueue(db, "send_sms", sms_event("+5511987654321"))
    run_worker(db)
    fields = dict(form(wa.requests[0]))
    assert fields["To"] == "whatsapp:+5511987654321" and fields["Body"] == "Your code is 482913"


def test_whatsapp_failure_falls_back_to_sms_in_the_same_run(db, mocks):
    wa = mocks(lambda req: twilio_error(63016, 400))
    sms = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "whatsapp", wa, kind="twilio_whatsapp")
    add_twilio(db, "sms-twilio", sms)
    add_latam_route(db, ["whatsapp", "sms-twilio"])
    enqueue(db, "send_sms", sms_event("+17875550123"))  # Puerto Rico: +1, yet Latin America
    run_worker(db)
    assert wa.count() == 1 and sms.count() == 1
    assert dict(form(sms.requests[0]))["To"] == "+17875550123"
    [job] = jobs(db)
    assert (job["status"], job["channel"], job["provider"]) == ("completed", "sms", "sms-twilio")
    assert "whatsapp: HTTP 400: Twilio error 63016" in job["last_error"]
    assert [a["result"] for a in job["attempts"]] == ["provider_failed", "sent"]


def test_a_number_without_whatsapp_gets_the_sms(db, mocks):
    """Twilio 63024: the number cannot receive WhatsApp. That refuses the channel, not the number:
    the chain's SMS provider gets the code. An invalid number (21211) still stops the chain."""
    wa = mocks(lambda req: twilio_error(63024, 400))
    sms = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "whatsapp", wa, kind="twilio_whatsapp")
    add_twilio(db, "sms-twilio", sms)
    add_latam_route(db, ["whatsapp", "sms-twilio"])
    enqueue(db, "send_sms", sms_event("+525512345678"))
    run_worker(db)
    assert wa.count() == 1 and sms.count() == 1
    [job] = jobs(db)
    assert (job["status"], job["channel"], job["provider"]) == ("completed", "sms", "sms-twilio")
    assert [a["result"] for a in job["attempts"]] == ["channel_rejected", "sent"]

    db.execute("truncate mysmshook.job_queue")
    wa.responder = lambda req: twilio_error(21211, 400)
    enqueue(db, "send_sms", sms_event("+525512345679"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "failed" and wa.count() == 2 and sms.count() == 1
    assert [a["result"] for a in job["attempts"]] == ["recipient_rejected"]


def test_routing_by_region_and_calling_code(db, mocks):
    wa, sms, india = mocks(), mocks(), mocks()
    for name, mock in [("wa-gateway", wa), ("sms-gateway", sms), ("india-gateway", india)]:
        add_provider(db, name, "webhook", {"url": mock.url, "secret": "whsec_c2VjcmV0"})
    add_latam_route(db, ["wa-gateway"])
    db.execute("insert into mysmshook.routes (name, channel, position, calling_codes, providers) "
               "values ('india', 'sms', 20, '{91}', '{india-gateway}')")
    set_chain(db, "sms", ["sms-gateway"])
    numbers = {"+525512345678": wa, "+5511987654321": wa, "+5491123456789": wa, "+17875550123": wa,
               "+18095550123": wa, "+12125550123": sms, "+447400123456": sms, "+919876543210": india}
    for number in numbers:
        enqueue(db, "send_sms", sms_event(number))
    run_worker(db)
    for number, mock in numbers.items():
        assert number in [r.json["to"] for r in mock.requests], number
    assert (wa.count(), sms.count(), india.count()) == (5, 2, 1)


@pytest.mark.parametrize("answer,status,retried,mentions", [
    (lambda: twilio_error(21211, 400), "failed", False, "Twilio error 21211"),
    (lambda: twilio_error(21610, 400), "failed", False, "Twilio error 21610"),
    (lambda: twilio_error(20003, 401), "failed", False, "authentication failed: Twilio error 20003"),
    (lambda: twilio_error(20429, 429, {"retry-after": "30"}), "pending", True, "Twilio error 20429"),
    (lambda: twilio_error(20500, 500), "pending", True, "Twilio error 20500"),
])
def test_twilio_error_mapping(db, mocks, answer, status, retried, mentions):
    mock = mocks(lambda req: answer())
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == status and (job["retry_count"] == 1) == retried
    assert mentions in job["last_error"]
    assert TOKEN not in json.dumps(job["attempts"]) + job["last_error"]
    if "20429" in mentions:
        (wait,) = db.execute("select extract(epoch from scheduled_at - now()) from mysmshook.job_queue").fetchone()
        assert 25 < float(wait) <= 31


def test_invalid_recipient_does_not_fall_back(db, mocks):
    first = mocks(lambda req: twilio_error(21211, 400))
    second = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "a", first)
    add_twilio(db, "b", second)
    set_chain(db, "sms", ["a", "b"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    assert second.count() == 0 and jobs(db)[0]["status"] == "failed"


# --- Resend -------------------------------------------------------------------------------

def add_resend(conn, mock, name="resend"):
    add_provider(conn, name, "resend", {"api_key": "re_123456789", "from": "Acme <auth@acme.test>",
                                         "reply_to": "support@acme.test", "base_url": mock.url})
    set_chain(conn, "email", [name])


def test_resend_wire_format(db, mocks):
    mock = mocks(lambda req: ok_json({"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}))
    add_resend(db, mock)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [req] = mock.requests
    [job] = jobs(db)
    assert req.path == "/emails"
    assert req.headers["authorization"] == "Bearer re_123456789"
    assert req.headers["idempotency-key"] == str(job["job_id"])
    body = req.json
    assert set(body) == {"from", "to", "subject", "text", "html", "tags", "reply_to"}
    assert body["from"] == "Acme <auth@acme.test>" and body["to"] == ["john@soupbase.io"]
    assert body["subject"] == "Confirm your signup" and "305805" in body["text"]
    assert body["tags"] == [{"name": "category", "value": "signup_email"}]
    openapi_check.validate("resend", req)
    assert job["status"] == "completed" and job["provider_message_id"] == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"


@pytest.mark.parametrize("status,name,headers,outcome", [
    (422, "validation_error", {}, "failed"),
    (403, "validation_error", {}, "failed"),
    (401, "missing_api_key", {}, "failed"),
    (429, "rate_limit_exceeded", {"retry-after": "20"}, "pending"),
    (409, "concurrent_idempotent_requests", {}, "pending"),
    (500, "internal_server_error", {}, "pending"),
])
def test_resend_error_mapping(db, mocks, status, name, headers, outcome):
    mock = mocks(lambda req: ok_json({"statusCode": status, "message": "no", "name": name}, status=status, headers=headers))
    add_resend(db, mock)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == outcome and f"Resend {name}" in job["last_error"]
    if status == 429:
        (wait,) = db.execute("select extract(epoch from scheduled_at - now()) from mysmshook.job_queue").fetchone()
        assert 15 < float(wait) <= 21


def test_secure_email_change_sends_two_correctly_addressed_emails(db, mocks):
    mock = mocks(lambda req: ok_json({"id": "x"}))
    add_resend(db, mock)
    event = seed("email_change.json")
    enqueue(db, "send_email", event)
    run_worker(db)
    by_to = {r.json["to"][0]: r.json for r in mock.requests}
    assert set(by_to) == {"old@example.com", "new@example.com"}
    d = event["email_data"]
    assert d["token"] in by_to["old@example.com"]["text"] and f"token={d['token_hash_new']}" in by_to["old@example.com"]["text"]
    assert d["token_new"] in by_to["new@example.com"]["text"] and f"token={d['token_hash']}" in by_to["new@example.com"]["text"]
    assert len({r.headers["idempotency-key"] for r in mock.requests}) == 2


# --- Templates ----------------------------------------------------------------------------

def test_supabase_style_templates_by_language(db, mocks):
    mock = mocks(lambda req: ok_json({"id": "x"}))
    add_resend(db, mock)
    db.execute("""insert into mysmshook.templates (channel, action_type, language, subject, body, html) values
        ('email', 'signup', 'es', 'Confirma tu cuenta', 'Código {{ .Token }}: {{ .ConfirmationURL }}',
         '<p>Hola {{ .Data.name }}</p><a href="{{ .ConfirmationURL }}">Confirmar</a>')""")
    event = seed("email_seed.json")
    event["user"]["user_metadata"] = {"locale": "es-MX", "name": "<b>Ana</b>"}
    enqueue(db, "send_email", event)
    run_worker(db)
    body = mocks and mock.requests[0].json
    assert body["subject"] == "Confirma tu cuenta"
    assert body["text"].startswith("Código 305805: http://localhost:9999/verify?token=7d5b")
    assert "<p>Hola &lt;b&gt;Ana&lt;/b&gt;</p>" in body["html"]


def test_sms_template_and_app_hash(db, mocks):
    mock = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    db.execute("update mysmshook.routes set app_hash = 'FA+9qCX9VSu' where name = 'sms'")
    db.execute("insert into mysmshook.templates (channel, action_type, body) values ('sms', 'sms', '{{ .Token }} es tu código')")
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    assert dict(form(mock.requests[0]))["Body"] == "482913 es tu código\nFA+9qCX9VSu"
    [job] = jobs(db)
    assert (job["sms_encoding"], job["sms_segments"]) == ("UCS-2", 1)


@pytest.mark.parametrize("body,error", [
    ("Code {{ .Token ", "template is invalid"),
    ("Code {{ .Tokn }}", "unknown variable(s) Tokn"),
    ("Code {% for %}", "template is invalid"),
])
def test_broken_template_is_refused_when_saved(db, body, error):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=error.replace("(", r"\(").replace(")", r"\)")):
        db.execute("insert into mysmshook.templates (channel, action_type, body) values ('sms', 'sms', %s)", (body,))


def test_configuration_errors_are_refused_when_saved(db):
    db.execute("insert into mysmshook.providers (name, kind) values ('spare', 'log')")
    db.execute("insert into mysmshook.routes (name, channel, position, calling_codes, providers) values ('spare', 'sms', 5, '{44}', '{spare}')")
    for sql, error in [
        ("insert into mysmshook.providers (name, kind) values ('x', 'pigeon')", "unknown provider kind"),
        ("insert into mysmshook.providers (name, kind, settings) values ('x', 'twilio', '{\"account_sid\": \"AC1\"}')", "account_sid"),
        ("insert into mysmshook.routes (name, channel, providers) values ('r', 'sms', '{nope}')", "provider nope does not exist"),
        ("insert into mysmshook.routes (name, channel, regions, providers) values ('r', 'sms', '{Mexico}', '{log}')", "region Mexico"),
        ("delete from mysmshook.providers where name = 'spare'", "provider spare is used by route spare"),
        ("insert into mysmshook.providers (name, kind) values ('log', 'log')", "taken by the built-in log provider"),
    ]:
        with pytest.raises(psycopg.Error, match=error):
            db.execute(sql)


# --- Concurrency and rate limits ----------------------------------------------------------

def test_concurrent_delivery_is_a_fraction_of_sequential_time(cluster, db, mocks):
    def slow(req):
        time.sleep(0.1)
        return ok_json({"code": "ok"})

    mock = mocks(slow)
    add_provider(db, "gateway", "webhook", {"url": mock.url, "secret": "whsec_c2VjcmV0"})
    set_chain(db, "sms", ["gateway"])
    db.execute("""select mysmshook.send_sms(jsonb_build_object('user', jsonb_build_object('phone', '12125' || lpad(i::text, 6, '0')),
                                                                'sms', jsonb_build_object('otp', '123456')))
                    from generate_series(1, 500) i""")
    db.execute("set mysmshook.concurrency = 32")
    db.execute("set mysmshook.batch_size = 500")
    started = time.monotonic()
    run_worker(db)
    elapsed = time.monotonic() - started
    sequential = 500 * 0.1
    print(f"\n500 jobs, provider answering in 100 ms, 32 in flight: {elapsed:.2f}s "
          f"(sequential would take at least {sequential:.0f}s; {sequential / elapsed:.1f}x faster)")
    assert mock.count() == 500
    assert db.execute("select count(*) from mysmshook.job_queue where status = 'completed'").fetchone()[0] == 500
    assert elapsed < sequential / 4  # generous: 32 in flight should approach 32x


def test_rate_limit_spaces_requests(db, mocks):
    mock = mocks(lambda req: ok_json({"code": "ok"}))
    add_provider(db, "gateway", "webhook", {"url": mock.url, "secret": "whsec_c2VjcmV0", "rate_limit": 20})
    set_chain(db, "sms", ["gateway"])
    for i in range(11):
        enqueue(db, "send_sms", sms_event(f"+1212555{i:04d}"))
    run_worker(db)
    times = sorted(r.received_at for r in mock.requests)
    assert len(times) == 11 and times[-1] - times[0] >= 0.45  # 10 gaps of 50 ms


# --- Secrets ------------------------------------------------------------------------------

def test_vault_secret_reference(db, mocks):
    mock = mocks(lambda req: TWILIO_CREATED)
    # A stand-in for Supabase Vault's view, owned by the superuser like the real one.
    db.execute("create schema vault")
    try:
        db.execute("create view vault.decrypted_secrets as select 'twilio_token'::text as name, 'from-the-vault'::text as decrypted_secret")
        add_provider(db, "twilio", "twilio", {"account_sid": SID, "auth_token": {"vault": "twilio_token"},
                                              "from": "+15005550006", "base_url": mock.url})
        set_chain(db, "sms", ["twilio"])
        enqueue(db, "send_sms", sms_event("+12125550123"))
        run_worker(db)
        assert mock.requests[0].headers["authorization"] == basic(SID, "from-the-vault")
        (stored,) = db.execute("select settings::text from mysmshook.providers where name = 'twilio'").fetchone()
        assert "from-the-vault" not in stored
    finally:
        db.execute("drop schema vault cascade")


def test_secrets_are_unreachable_for_other_roles(cluster, db, mocks):
    mock = mocks(lambda req: twilio_error(20003, 401))
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    for role in ["supabase_auth_admin", "app_user"]:
        with cluster.connect(user=role) as conn:
            for sql in ["select settings from mysmshook.providers", "select * from mysmshook.job_queue",
                        "select * from mysmshook.queue_status", "select mysmshook.check_provider('twilio', '{}')"]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
            settings = conn.execute("select string_agg(setting, ' ') from pg_settings where name like 'mysmshook.%%'").fetchone()[0]
            assert TOKEN not in (settings or "")
    [job] = jobs(db)
    assert TOKEN not in json.dumps(job, default=str)
    assert TOKEN not in cluster.log()


def test_app_name_reaches_templates(db, mocks):
    mock = mocks(lambda req: TWILIO_CREATED)
    add_twilio(db, "twilio", mock)
    set_chain(db, "sms", ["twilio"])
    db.execute("set mysmshook.app_name = 'Acme'")
    db.execute("insert into mysmshook.templates (channel, action_type, body) values ('sms', 'sms', '{{ app_name }}: {{ .Token }}')")
    enqueue(db, "send_sms", sms_event("+12125550123"))
    run_worker(db)
    assert dict(form(mock.requests[0]))["Body"] == "Acme: 482913"
