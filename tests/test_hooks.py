"""The hooks, called exactly as Supabase Auth calls them, and everything they must refuse."""

import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import jobs, seed


def call_as_auth_server(cluster, function, event):
    """Supabase Auth: role supabase_auth_admin (NOINHERIT, search_path = auth), inside its own
    transaction, `set local statement_timeout to '2000'` then one parameterised select."""
    with cluster.connect(user="supabase_auth_admin", autocommit=False) as conn:
        assert conn.execute("show search_path").fetchone()[0] == "auth"
        conn.execute("set local statement_timeout to '2000'")
        (answer,) = conn.execute(f'select "mysmshook"."{function}"(%s)', (Jsonb(event),)).fetchone()
        conn.commit()
        return answer


def valid_seed():
    """The seed event with a number libphonenumber accepts (the seed's +1333363128 is too short)."""
    event = seed("sms_seed.json")
    event["user"]["phone"] = "12125550123"
    return event


def test_sms_seed_event_as_auth_server(cluster, db):
    assert call_as_auth_server(cluster, "send_sms", valid_seed()) == {}
    [job] = jobs(db)
    assert job["status"] == "pending" and job["channel"] == "sms" and job["action_type"] == "sms"
    assert job["job_data"]["to"] == "+12125550123"
    assert job["job_data"]["code"] == "561166"
    assert job["job_data"]["user_id"] == "6481a5c1-3d37-4a56-9f6a-bee08c554965"
    # Due at once: the start of the current 5-minute window.
    (due,) = db.execute(
        "select scheduled_at = date_bin('5 minutes', now(), timestamptz '1970-01-01 00:00:00+00') "
        "from mysmshook.job_queue").fetchone()
    assert due


def test_a_number_libphonenumber_refuses_is_a_400_the_person_can_act_on(cluster, db):
    """The seed's own number has nine digits after +1: Auth shows the message at once, instead
    of the person waiting for a code that a queued job could never deliver."""
    answer = call_as_auth_server(cluster, "send_sms", seed("sms_seed.json"))
    assert answer["error"] == {
        "http_code": 400,
        "message": "phone number +13****3128 is not a valid number for its country (libphonenumber)"}
    assert jobs(db) == []


def test_accepted_prefixes_let_mexicos_old_mobile_numbers_through(cluster, db):
    """+52 1 (Mexico's old mobile prefix, still used by WhatsApp) is refused by libphonenumber;
    mysmshook.accepted_number_prefixes is the documented way through, routed as Mexico."""
    event = seed("sms_seed.json")
    event["user"]["phone"] = "5215512345678"
    assert call_as_auth_server(cluster, "send_sms", event)["error"]["http_code"] == 400
    db.execute("alter role supabase_auth_admin set mysmshook.accepted_number_prefixes = '+521'")
    try:
        assert call_as_auth_server(cluster, "send_sms", event) == {}
    finally:
        db.execute("alter role supabase_auth_admin reset mysmshook.accepted_number_prefixes")
    db.execute("insert into mysmshook.providers (name, kind) values ('mexico', 'log')")
    db.execute("insert into mysmshook.routes (name, channel, position, regions, providers) "
               "values ('mx', 'sms', 1, '{MX}', '{mexico}')")
    db.execute("set mysmshook.accepted_number_prefixes = '521'")
    from conftest import run_worker
    run_worker(db)
    [job] = jobs(db)
    assert (job["status"], job["route"], job["provider"]) == ("completed", "mx", "mexico"), job["last_error"]


def test_real_auth_sms_event_uses_sms_phone_and_keeps_mfa(cluster, db):
    event = seed("sms_auth.json")
    assert call_as_auth_server(cluster, "send_sms", event) == {}
    [job] = jobs(db)
    assert job["job_data"]["to"] == "+525512345678"  # sms.phone, not user.phone
    assert job["action_type"] == "mfa" and job["job_data"]["sms_type"] == "mfa"
    assert job["job_data"]["event_id"] == event["metadata"]["uuid"]
    assert job["priority"] == 30


def test_email_seed_event_as_auth_server(cluster, db):
    assert call_as_auth_server(cluster, "send_email", seed("email_seed.json")) == {}
    [job] = jobs(db)
    assert job["channel"] == "email" and job["action_type"] == "signup"
    assert job["job_data"]["to"] == "john@soupbase.io"
    assert job["job_data"]["code"] == "305805"
    assert job["job_data"]["token_hash"] == "7d5b7b1964cf5d388340a7f04f1dbb5eeb6c7b52ef8270e1737a58d0"


def test_secure_email_change_queues_two_correctly_paired_emails(cluster, db):
    event = seed("email_change.json")
    assert call_as_auth_server(cluster, "send_email", event) == {}
    by_to = {j["job_data"]["to"]: j["job_data"] for j in jobs(db)}
    d = event["email_data"]
    assert by_to["old@example.com"]["code"] == d["token"]
    assert by_to["old@example.com"]["token_hash"] == d["token_hash_new"]
    assert by_to["new@example.com"]["code"] == d["token_new"]
    assert by_to["new@example.com"]["token_hash"] == d["token_hash"]


@pytest.mark.parametrize("hook, event", [
    ("send_sms", valid_seed()), ("send_sms", seed("sms_auth.json")),
    ("send_email", seed("email_seed.json")),  # no metadata, as Auth's own sample
    ("send_email", seed("email_change.json"))], ids=["sms seed", "sms auth", "email seed", "email change"])
def test_a_well_formed_event_costs_no_error_wording(db, hook, event):
    """The hooks check every field they read in one expression and word an error only when it
    fails; the accepted prefixes are read only for a number libphonenumber refuses. Each well-
    formed event (with or without metadata) is queued without calling either, nor any SQL-
    language function the planner did not inline or fold (those are planned at every call)."""
    db.execute("set track_functions = 'all'")
    assert db.execute(f"select mysmshook.{hook}(%s)", (Jsonb(event),)).fetchone() == ({},)  # plans made

    def counts():  # calls not yet flushed to the statistics, this transaction's among them
        return {(name, language): n for name, language, n in db.execute(
            "select p.proname, l.lanname, pg_stat_get_xact_function_calls(p.oid) "
            "from pg_proc p join pg_language l on l.oid = p.prolang where p.pronamespace = 'mysmshook'::regnamespace")}

    with db.transaction():
        before = counts()
        assert db.execute(f"select mysmshook.{hook}(%s)", (Jsonb(event),)).fetchone() == ({},)
        called = {function for function, n in counts().items() if (n or 0) > (before[function] or 0)}
    names = {name for name, _ in called}
    assert "enqueue" in names, called  # the count works
    assert not names & {"event_error", "accepted_number_prefixes"}, called
    assert [name for name, language in called if language == "sql"] == [], called

def test_notification_queues_a_tokenless_low_priority_job(cluster, db):
    event = seed("email_seed.json")
    event["email_data"].update(email_action_type="password_changed_notification", token="", token_hash="")
    assert call_as_auth_server(cluster, "send_email", event) == {}
    [job] = jobs(db)
    assert job["priority"] == 0 and "code" not in job["job_data"]
    # It does not wait forever: mysmshook.notification_lifetime, a day unless set.
    assert round((job["expires_at"] - job["created_at"]).total_seconds()) == 86_400


def test_a_notification_past_its_lifetime_ends_expired(cluster, db, mock):
    """A notification (no code) used to wait forever behind a provider down for days or a
    template that fails for its data; it now ends expired after mysmshook.notification_lifetime."""
    from conftest import run_worker, use_webhook
    use_webhook(db, mock.url, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    event = seed("email_seed.json")
    event["email_data"].update(email_action_type="password_changed_notification", token="", token_hash="")
    db.execute("set mysmshook.notification_lifetime = '1s'")
    assert db.execute("select mysmshook.send_email(%s)", (Jsonb(event),)).fetchone() == ({},)
    time.sleep(1.1)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "expired" and "notification_lifetime" in job["last_error"] and mock.count() == 0


def _without(event, *path):
    *parents, last = path
    target = event
    for key in parents:
        target = target[key]
    del target[last]
    return event


def _with(event, value, *path):
    *parents, last = path
    target = event
    for key in parents:
        target = target[key]
    target[last] = value
    return event


MALFORMED_SMS = [
    ("no user", lambda e: _without(e, "user"), "user"),
    ("no sms", lambda e: _without(e, "sms"), "sms"),
    ("no otp", lambda e: _without(e, "sms", "otp"), "otp"),
    ("otp is a number", lambda e: _with(e, 561166, "sms", "otp"), "sms.otp"),
    ("empty otp", lambda e: _with(e, "", "sms", "otp"), "sms.otp"),
    ("phone is a number", lambda e: _with(e, 1333363128, "user", "phone"), "user.phone"),
    ("no phone at all", lambda e: _with(e, "", "user", "phone"), "destination"),
    ("unparseable phone", lambda e: _with(e, "call me maybe", "user", "phone"), "phone number"),
    ("user is a string", lambda e: _with(e, "bob", "user"), "user"),
]

MALFORMED_EMAIL = [
    ("no email_data", lambda e: _without(e, "email_data"), "email_data"),
    ("no action type", lambda e: _without(e, "email_data", "email_action_type"), "email_action_type"),
    ("garbage action type", lambda e: _with(e, "DROP TABLE x", "email_data", "email_action_type"), "email_action_type"),
    ("redirect with a line break", lambda e: _with(e, "myapp://cb\r\nX: 1", "email_data", "redirect_to"), "redirect_to"),
    ("no token", lambda e: _with(_with(e, "", "email_data", "token"), "", "email_data", "token_hash"), "token"),
    ("unparseable email", lambda e: _with(e, "john at soupbase", "user", "email"), "user.email"),
    ("token is a list", lambda e: _with(e, ["1"], "email_data", "token"), "email_data.token"),
    ("header injection in email", lambda e: _with(e, "a@b.io\r\nBcc: x@y.io", "user", "email"), "user.email"),
]


@pytest.mark.parametrize("case,mutate,mentions", MALFORMED_SMS, ids=[c[0] for c in MALFORMED_SMS])
def test_malformed_sms_event_is_a_400_and_inserts_nothing(cluster, db, case, mutate, mentions):
    answer = call_as_auth_server(cluster, "send_sms", mutate(seed("sms_seed.json")))
    assert answer["error"]["http_code"] == 400
    assert mentions in answer["error"]["message"], answer
    assert jobs(db) == []


@pytest.mark.parametrize("case,mutate,mentions", MALFORMED_EMAIL, ids=[c[0] for c in MALFORMED_EMAIL])
def test_malformed_email_event_is_a_400_and_inserts_nothing(cluster, db, case, mutate, mentions):
    answer = call_as_auth_server(cluster, "send_email", mutate(seed("email_seed.json")))
    assert answer["error"]["http_code"] == 400
    assert mentions in answer["error"]["message"], answer
    assert jobs(db) == []


@pytest.mark.parametrize("event", [None, [], "text", 42])
def test_non_object_events_are_refused(cluster, db, event):
    with cluster.connect(user="supabase_auth_admin") as conn:
        (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(event) if event is not None else None,)).fetchone()
    assert answer["error"]["http_code"] == 400
    assert jobs(db) == []


@pytest.mark.parametrize("redirect_to", [
    "io.supabase.app://login-callback",                 # a mobile app's custom scheme
    "https://app.example.com/auth/callback?next=/home",  # a universal link
    "http://localhost:3000/",
])
def test_mobile_deep_links_and_universal_links_are_accepted(cluster, db, redirect_to):
    event = seed("email_seed.json")
    event["email_data"]["redirect_to"] = redirect_to
    assert call_as_auth_server(cluster, "send_email", event) == {}
    [job] = jobs(db)
    assert job["job_data"]["redirect_to"] == redirect_to


def test_an_action_type_from_a_later_auth_is_queued_with_a_generic_message(cluster, db, mock):
    from conftest import run_worker, use_webhook
    use_webhook(db, mock.url, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", channels=("email",))
    event = seed("email_seed.json")
    event["email_data"]["email_action_type"] = "passkey_added_notification"
    event["email_data"].update(token="", token_hash="")
    assert call_as_auth_server(cluster, "send_email", event) == {}
    event = seed("email_seed.json")
    event["email_data"]["email_action_type"] = "otp_login"
    assert call_as_auth_server(cluster, "send_email", event) == {}
    assert call_as_auth_server(cluster, "send_email", event) == {}
    run_worker(db)
    by_action = {r.json["template_name"]: r.json for r in mock.requests}
    assert by_action["passkey_added_notification_email"]["subject"] == "Passkey added notification"
    otp = by_action["otp_login_email"]
    assert otp["subject"] == "Otp login" and event["email_data"]["token"] in otp["body"]
    assert cluster.log().count('email action type "otp_login" is unknown to this version') >= 1
    assert {j["priority"] for j in jobs(db)} == {0, 20}


def test_email_change_without_the_new_address_is_refused(cluster, db):
    """One token pair and no user.new_email: the confirmation would go to the current mailbox."""
    event = seed("email_change.json")
    event["email_data"].update(token_new="", token_hash_new="")
    event["user"]["new_email"] = ""
    answer = call_as_auth_server(cluster, "send_email", event)
    assert answer["error"]["http_code"] == 400 and "user.new_email" in answer["error"]["message"]
    assert jobs(db) == []


@pytest.mark.parametrize("hook,seed_file", [("send_sms", "sms_auth.json"), ("send_email", "email_seed.json")])
def test_documents_postgres_accepts_never_make_the_hook_raise(cluster, db, hook, seed_file):
    """A user's own metadata nested 5,000 levels deep and a number beyond float range (1e309)
    elsewhere in the event: valid jsonb, so the hook queues the message (it used to raise
    "recursion limit exceeded" / "number out of range": HTTP 500, for that user every time)."""
    import json as _json
    event = seed(seed_file)
    event["user"]["user_metadata"] = {"locale": "es", "deep": "__DEEP__", "big": "__BIG__"}
    event["user"]["app_metadata"] = {"n": "__BIG__"}
    text = (_json.dumps(event).replace('"__DEEP__"', "[" * 5000 + "1e309" + "]" * 5000)
            .replace('"__BIG__"', "1e309"))
    with cluster.connect(user="supabase_auth_admin", autocommit=False) as conn:
        (answer,) = conn.execute(f"select mysmshook.{hook}(%s::jsonb)", (text,)).fetchone()
        conn.commit()
    assert answer == {}
    # (Python's json module cannot read 5,000 levels: ask PostgreSQL for the parts to check.)
    query = "select job_data->>'locale', status, last_error from mysmshook.job_queue"
    [(locale, status, _)] = db.execute(query).fetchall()
    assert (locale, status) == ("es", "pending")
    from conftest import run_worker
    run_worker(db)
    [(_, status, error)] = db.execute(query).fetchall()
    assert status == "completed", error


def test_rolled_back_sign_up_leaves_no_job(cluster, db):
    with cluster.connect(user="supabase_auth_admin", autocommit=False) as conn:
        (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(valid_seed()),)).fetchone()
        assert answer == {}
        conn.rollback()
    assert jobs(db) == []


def test_a_job_refuses_an_unknown_status_or_channel(db):
    """The domains that stand for CHECK constraints on job_queue refuse what those refused, on
    every write; queue_status shows both as text."""
    assert db.execute("select mysmshook.send_sms(%s)", (Jsonb(valid_seed()),)).fetchone() == ({},)
    with pytest.raises(psycopg.errors.CheckViolation, match="job_status_check"):
        db.execute("update mysmshook.job_queue set status = 'lost'")
    with pytest.raises(psycopg.errors.CheckViolation, match="job_channel_check"):
        db.execute("insert into mysmshook.job_queue (job_data, channel, action_type) values ('{}', 'fax', 'sms')")
    db.execute("update mysmshook.job_queue set status = 'cancelled', finished_at = now()")
    assert db.execute("select status, channel, pg_typeof(status)::text from mysmshook.queue_status"
                      ).fetchall() == [("cancelled", "sms", "text")]


@pytest.mark.parametrize("role", ["anon", "authenticated", "app_user"])
def test_other_roles_are_denied_everything(cluster, db, role):
    statements = [
        ("select mysmshook.send_sms('{}')", None),
        ("select mysmshook.send_email('{}')", None),
        ("select * from mysmshook.job_queue", None),
        ("select * from mysmshook.providers", None),
        ("call mysmshook.run_worker()", None),
        ("select mysmshook.dequeue_and_run_jobs()", None),
        ("select mysmshook.claim_jobs(1, '1s', gen_random_uuid())", None),
        ("alter system set mysmshook.allow_http_loopback = on", None),
    ]
    with cluster.connect(user="app_user") as conn:
        if role != "app_user":
            db.execute(f"grant {role} to app_user")
            conn.execute(f"set role {role}")
        try:
            for sql, _ in statements:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
        finally:
            if role != "app_user":
                db.execute(f"revoke {role} from app_user")


def test_auth_role_can_only_enqueue(cluster, db):
    with cluster.connect(user="supabase_auth_admin") as conn:
        for sql in [
            "select * from mysmshook.job_queue",
            "select * from mysmshook.providers",
            "call mysmshook.run_worker()",
            "select mysmshook.dequeue_and_run_jobs()",
            "select mysmshook.record_outcomes('[]')",
            "select mysmshook.grant_hook_access('anon')",
            "alter system set mysmshook.schedule_window = '1s'",
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)


def test_grant_hook_access_gives_a_role_the_hooks_only(cluster, db):
    db.execute("create role custom_auth login")
    try:
        db.execute("select mysmshook.grant_hook_access('custom_auth')")
        with cluster.connect(user="custom_auth") as conn:
            (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(valid_seed()),)).fetchone()
            assert answer == {}
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from mysmshook.job_queue")
        assert len(jobs(db)) == 1
    finally:
        db.execute("drop owned by custom_auth")
        db.execute("drop role custom_auth")


@pytest.mark.parametrize("hook", ["send_sms", "send_email"])
def test_a_callers_own_settings_never_reach_the_hooks(cluster, db, hook):
    """The hooks read their settings through mysmshook.setting(), which loads the library, and the
    library registers every mysmshook setting as superuser-only: what the caller set before (a
    placeholder then) is dropped, and setting one afterwards is refused."""
    with cluster.connect(user="supabase_auth_admin") as conn:
        for setting in ["mysmshook.max_retries = 99", "mysmshook.sms_code_lifetime = '100d'",
                        "mysmshook.email_code_lifetime = '100d'", "mysmshook.accepted_number_prefixes = '+1'"]:
            conn.execute(f"set {setting}")
        if hook == "send_sms":
            # The seed's own number: refused unless +1 were an accepted prefix.
            answer = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(seed("sms_seed.json")),)).fetchone()[0]
            assert answer["error"]["http_code"] == 400, answer
            event = valid_seed()
        else:
            event = seed("email_seed.json")
        assert conn.execute(f"select mysmshook.{hook}(%s)", (Jsonb(event),)).fetchone() == ({},)
        for setting in ["mysmshook.allow_http_loopback = on", "mysmshook.schedule_window = '1s'",
                        "mysmshook.http_timeout = '1ms'"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"set {setting}")
    [(retries, lifetime)] = db.execute("select max_retries, expires_at - now() <= interval '1 hour' "
                                       "from mysmshook.job_queue").fetchall()
    assert (retries, lifetime) == (3, True)


# --- What the hooks accept, value by value (sql/hooks.sql) --------------------------------

def _email_answer(cluster, db, mutate):
    event = seed("email_seed.json")
    mutate(event)
    answer = call_as_auth_server(cluster, "send_email", event)
    queued = jobs(db)
    db.execute("truncate mysmshook.job_queue")
    assert (answer == {}) == bool(queued), (answer, queued)
    return answer


@pytest.mark.parametrize("address,accepted", [
    ("john@soupbase.io", True), ("josé.núñez@correo.mx", True), ("a.b+tag@sub.example.co", True),
    ("user@localhost", True), ("o'brien@example.ie", True), ("x@[192.0.2.1]", True),
    ("john", False), ("a@b@c", False), ("john@soupbase.io\r\nBcc: x@y.z", False), ("Jo <j@x.io>", False),
    ("a,b@x.io", False), (".a@x.io", False), ("a..b@x.io", False), ("a.@x.io", False), ("a@-x.io", False),
    ("a@x..io", False), ("a" * 65 + "@x.io", False), ("a@" + "b" * 64 + ".io", False), ("john at soupbase", False),
    ("a@mail_host.example.com", True), ('"john.doe"@example.com', True), ('""@x.io', False),
    ("admin\u200b@x.io", False), ("a\u00a0b@x.io", False), ("a@example\u3002com", False), ("a\u202e@x.io", False),
    ("a\u0085@x.io", False),
])
def test_email_addresses(cluster, db, address, accepted):
    def mutate(event):
        event["user"]["email"] = address
    answer = _email_answer(cluster, db, mutate)
    assert (answer == {}) == accepted, answer
    if not accepted:
        assert "user.email" in answer["error"]["message"]


@pytest.mark.parametrize("link,accepted", [
    ("io.supabase.app://login-callback", True), ("com.example.app:/oauth2redirect", True),
    ("https://app.example.com/.well-known/apple-app-site-association?x=1", True),
    ("http://localhost:3000/welcome", True),
    ("exp+my-app://expo-development-client/?url=http%3A%2F%2F10.0.2.2%3A8081", True),
    ("no-scheme", False), ("://x", False), ("myapp://x y", False), ("myapp://x\r\nBcc: a@b.c", False),
    ("myapp://" + "x" * 2050, False),
])
def test_redirect_links(cluster, db, link, accepted):
    def mutate(event):
        event["email_data"]["redirect_to"] = link
    answer = _email_answer(cluster, db, mutate)
    assert (answer == {}) == accepted, answer
    if not accepted:
        assert "redirect_to" in answer["error"]["message"]


@pytest.mark.parametrize("field,value,accepted", [
    ("site_url", "http://localhost:9999", True), ("site_url", "javascript:alert(1)", False),
    ("site_url", "https://x.io/\r\n", False), ("site_url", "https://x.io/\u00a0", False),
    ("redirect_to", "myapp://x\u2028y", False), ("old_email", ["b@y.io"], False), ("provider", [], False),
    ("token", "305805", True), ("token", "12 34", False), ("token", "x" * 65, False),
    ("token_hash", "pkce_7d5b7b1964cf5d388340a7f04f1dbb5eeb6c7b52ef8270e1737a58d0", True),
    ("token_hash", "abc\r\nX-Injected: 1", False), ("token_hash", "a" * 129, False),
])
def test_links_codes_and_token_hashes(cluster, db, field, value, accepted):
    def mutate(event):
        event["email_data"][field] = value
    answer = _email_answer(cluster, db, mutate)
    assert (answer == {}) == accepted, answer
    if not accepted:
        assert f"email_data.{field}" in answer["error"]["message"], answer


@pytest.mark.parametrize("phone,to", [
    ("525512345678", "+525512345678"), ("+12125550123", "+12125550123"),
    ("", None), ("+", None), ("12345", None), ("0123456789", None), ("+1 212 555 0123", None),
    ("+12125550123x", None), ("1234567890123456", None),
])
def test_phone_numbers_become_e164(cluster, db, phone, to):
    event = valid_seed()
    event["user"]["phone"] = phone
    answer = call_as_auth_server(cluster, "send_sms", event)
    if to is None:
        assert answer["error"]["http_code"] == 400 and jobs(db) == [], answer
    else:
        assert answer == {} and jobs(db)[0]["job_data"]["to"] == to


@pytest.mark.parametrize("metadata,locale", [
    ({"locale": "es"}, "es"), ({"locale": 5}, None), ({"lang": 5, "i18n": "fr"}, "fr"),
    ({"language": "pt-BR", "lang": "en"}, "pt-BR"), ({"locale": "x" * 36}, None), ("es", None), (None, None),
])
def test_the_preferred_language_comes_from_user_metadata(cluster, db, metadata, locale):
    event = valid_seed()
    event["user"]["user_metadata"] = metadata
    assert call_as_auth_server(cluster, "send_sms", event) == {}
    [job] = jobs(db)
    assert job["job_data"].get("locale") == locale
    assert job["job_data"].get("user_metadata") == metadata


def test_a_callers_standard_conforming_strings_changes_nothing(cluster, db):
    """PL/pgSQL reads its literals under the session's setting: the hooks' patterns hold no
    backslash that standard_conforming_strings = off would change."""
    with cluster.connect(user="supabase_auth_admin") as conn:
        conn.execute("set standard_conforming_strings = off")
        event = seed("email_seed.json")
        assert conn.execute("select mysmshook.send_email(%s)", (Jsonb(event),)).fetchone() == ({},)
        event["user"]["email"] = "not an address"
        (answer,) = conn.execute("select mysmshook.send_email(%s)", (Jsonb(event),)).fetchone()
        assert "user.email" in answer["error"]["message"]
        (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb({"user": 5, "sms": {}}),)).fetchone()
        assert answer["error"]["message"] == "invalid event at user: invalid type: number, expected an object"


def test_accepted_prefixes_take_any_blank_and_never_an_unparseable_number(cluster, db):
    db.execute("set mysmshook.accepted_number_prefixes = '+521,\t21'")
    event = valid_seed()
    event["user"]["phone"] = "5215512345678"  # Mexico's old mobile prefix: libphonenumber refuses it
    assert db.execute("select mysmshook.send_sms(%s)", (Jsonb(event),)).fetchone() == ({},)
    event["user"]["phone"] = "21012345678"  # +21: no such country code
    (answer,) = db.execute("select mysmshook.send_sms(%s)", (Jsonb(event),)).fetchone()
    assert "cannot be parsed" in answer["error"]["message"], answer
    assert [j["job_data"]["to"] for j in jobs(db)] == ["+5215512345678"]

