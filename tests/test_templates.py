"""Custom templates as Supabase users write them: Auth's own default templates pasted as they
are, Go control structures, missing user data, and a template that breaks at delivery."""

import copy
import time

import pytest
from psycopg.types.json import Jsonb

from conftest import deliver_due, jobs, make_due, seed, use_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN_HASH = "7d5b7b1964cf5d388340a7f04f1dbb5eeb6c7b52ef8270e1737a58d0"

# Supabase Auth's default subject and body for every email type that carries a code or a link
# (internal/mailer/templatemailer/templatemailer.go), keyed by the hook's email_action_type.
SUPABASE_DEFAULTS = {
    "invite": ("You've been invited", """<h2>You've been invited</h2>

<p>You've been invited to create an account. Follow the link below to accept.</p>
<p><a href="{{ .ConfirmationURL }}">Accept invitation</a></p>"""),
    "signup": ("Confirm your email address", """<h2>Confirm your email address</h2>

<p>Follow the link below to confirm this email address and finish signing up.</p>
<p><a href="{{ .ConfirmationURL }}">Confirm email address</a></p>
"""),
    "recovery": ("Reset your password", """<h2>Reset your password</h2>

<p>We received a request to reset your password. Follow the link below to choose a new one.</p>
<p><a href="{{ .ConfirmationURL }}">Reset password</a></p>
<p>If you didn't request this, you can safely ignore this email.</p>"""),
    "magiclink": ("Your sign-in link", """<h2>Your sign-in link</h2>

<p>Follow the link below to sign in. This link expires shortly and can only be used once.</p>
<p><a href="{{ .ConfirmationURL }}">Sign in</a></p>"""),
    "email_change": ("Confirm your new email address", """<h2>Confirm your new email address</h2>

<p>Follow the link below to confirm {{ .NewEmail }} as your new email address.</p>
<p><a href="{{ .ConfirmationURL }}">Confirm new email address</a></p>
<p>If you didn't request this change, you can safely ignore this email.</p>"""),
    "reauthentication": ("{{ .Token }} is your verification code", """<h2>Your verification code</h2>

<p>Use the code below to verify your identity. It expires shortly.</p>
<p>{{ .Token }}</p>"""),
}


def link(action):
    """The confirmation link as Go's html/template writes it into an href: & escaped."""
    return (f"http://localhost:9999/verify?token={TOKEN_HASH}&amp;type={action}"
            "&amp;redirect_to=http%3A%2F%2Flocalhost%3A3000%2F")


# What Auth itself would send for the seed event: the template text with the values put in.
EXPECTED = {
    action: (subject.replace("{{ .Token }}", "305805"),
             body.replace("{{ .ConfirmationURL }}", link(action)).replace("{{ .NewEmail }}", "new@soupbase.io")
                 .replace("{{ .Token }}", "305805"))
    for action, (subject, body) in SUPABASE_DEFAULTS.items()
}


def email_event(action, user_metadata=None):
    event = seed("email_seed.json")
    event["email_data"]["email_action_type"] = action
    if action == "email_change":
        event["user"]["new_email"] = "new@soupbase.io"
    if user_metadata is not None:
        event["user"]["user_metadata"] = user_metadata
    return event


def save_template(conn, action, body, subject="Hello", html=None):
    conn.execute("""insert into mysmshook.templates (channel, action_type, subject, body, html)
                    values ('email', %s, %s, %s, %s)
                    on conflict (channel, action_type, language)
                    do update set subject = excluded.subject, body = excluded.body, html = excluded.html""",
                 (action, subject, body, html))


def send(conn, event):
    (answer,) = conn.execute("select mysmshook.send_email(%s)", (Jsonb(event),)).fetchone()
    assert answer == {}


def test_supabase_default_templates_render_as_auth_renders_them(db, mock):
    use_webhook(db, mock.url, SECRET)
    for action, (subject, body) in SUPABASE_DEFAULTS.items():
        save_template(db, action, body="Text part", subject=subject, html=body)
        send(db, email_event(action))
    deliver_due(db)
    assert {j["status"] for j in jobs(db)} == {"completed"}
    received = {r.json["template_name"].removesuffix("_email"): r.json for r in mock.requests}
    assert set(received) == set(SUPABASE_DEFAULTS)
    for action, (subject, html) in EXPECTED.items():
        assert received[action]["subject"] == subject, action
        assert received[action]["html"] == html, action


CONTROL = """{{ if eq .Data.Domain "https://www.example.com" -}}
<h1>Welcome to Our Database Service!</h1>
{{- else if eq .Data.Domain "https://www.example2.com" -}}
<h1>Welcome to Our Web Hosting Service!</h1>
{{- else -}}
<h1>Welcome!</h1>
{{- end }}
<p>Hi {{ if .Data.name }}{{ .Data.name }}{{ else }}there{{ end }} from {{ .Data.address.city }}.</p>
{{ if and .Token (not .Data.hide_code) }}<p>Code: {{ .Token }}</p>{{ end }}"""


@pytest.mark.parametrize("metadata,expected", [
    ({"Domain": "https://www.example2.com", "name": "Ana O'Neil+1", "address": {"city": "Lima"}},
     "<h1>Welcome to Our Web Hosting Service!</h1>\n<p>Hi Ana O&#39;Neil&#43;1 from Lima.</p>\n<p>Code: 305805</p>"),
    ({"Domain": "https://www.example.com", "hide_code": True},
     "<h1>Welcome to Our Database Service!</h1>\n<p>Hi there from .</p>\n"),
    ({}, "<h1>Welcome!</h1>\n<p>Hi there from .</p>\n<p>Code: 305805</p>"),
])
def test_go_control_structures_and_missing_data(db, mock, metadata, expected):
    use_webhook(db, mock.url, SECRET)
    save_template(db, "signup", body="Text", html=CONTROL)
    send(db, email_event("signup", metadata))
    deliver_due(db)
    [job] = jobs(db)
    assert job["status"] == "completed", job["last_error"]
    assert mock.requests[0].json["html"] == expected


def test_a_template_that_fails_for_one_user_waits_for_its_fix(db, mock):
    """{% for %} over a number passes the save-time check (the sample has no such data) and
    fails at delivery for the user who has it: the job waits, says why, costs no retry, and
    goes out once the template is fixed. The other user's email is not held up."""
    use_webhook(db, mock.url, SECRET)
    save_template(db, "signup", body="Tags:{% for t in data.tags %} {{ t }}{% endfor %}")
    send(db, email_event("signup", {"tags": 5}))
    other = email_event("signup", {"tags": ["a", "b"]})
    other["user"]["id"] = "00000000-0000-0000-0000-000000000001"
    other["user"]["email"] = "ana@soupbase.io"
    send(db, other)
    deliver_due(db)
    broken, fine = sorted(jobs(db), key=lambda j: j["status"])[::-1]
    assert fine["status"] == "completed" and mock.requests[0].json["body"] == "Tags: a b"
    assert broken["status"] == "pending", broken["last_error"]
    assert broken["retry_count"] == 0
    assert "waiting for a template fix" in broken["last_error"] and "is not iterable" in broken["last_error"]
    assert len(mock.requests) == 1
    # Waiting again costs nothing either.
    make_due(db)
    deliver_due(db)
    [broken] = [j for j in jobs(db) if j["job_id"] == broken["job_id"]]
    assert (broken["status"], broken["retry_count"], len(mock.requests)) == ("pending", 0, 1)
    # The fix rescues it.
    save_template(db, "signup", body="Tags: {{ data.tags }}")
    make_due(db)
    deliver_due(db)
    [broken] = [j for j in jobs(db) if j["job_id"] == broken["job_id"]]
    assert broken["status"] == "completed"
    assert mock.requests[-1].json["body"] == "Tags: 5"


def test_a_job_waiting_for_a_template_fix_waits_for_a_change_not_a_timer(db, mock):
    """It used to be tried again every 5-10 s, an attempt appended each time (11,000 a day for
    one stuck job). Now it waits until the configuration changes (or its code would die), and
    any change to the configuration makes it due two seconds on."""
    use_webhook(db, mock.url, SECRET)
    save_template(db, "signup", body="Tags:{% for t in data.tags %} {{ t }}{% endfor %}")
    send(db, email_event("signup", {"tags": 5}))
    deliver_due(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and "waiting for a template fix" in job["last_error"]
    (wait,) = db.execute("select extract(epoch from scheduled_at - now()) from mysmshook.job_queue").fetchone()
    assert wait > 60  # not a timer of seconds: until a change (or the code's end)
    attempts = len(job["attempts"])
    deliver_due(db)
    assert len(jobs(db)[0]["attempts"]) == attempts and len(mock.requests) == 0
    save_template(db, "signup", body="Tags: {{ data.tags }}")  # the fix: due again
    (wait,) = db.execute("select extract(epoch from scheduled_at - now()) from mysmshook.job_queue").fetchone()
    assert wait <= 2  # once running workers have read the new configuration (they look every second)
    time.sleep(max(0.0, float(wait)) + 0.1)
    deliver_due(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and mock.requests[-1].json["body"] == "Tags: 5"


def test_a_stored_template_that_no_longer_compiles_sends_the_built_in_code(db, mock):
    """A template saved under an older release that this one's engine refuses: a code goes out
    with the built-in wording (and says so in its attempts) instead of waiting until it dies."""
    use_webhook(db, mock.url, SECRET)
    db.execute("alter table mysmshook.templates disable trigger templates_check")
    try:
        db.execute("insert into mysmshook.templates (channel, action_type, body) values ('sms', 'mfa', '{{ code ')")
    finally:
        db.execute("alter table mysmshook.templates enable trigger templates_check")
    (answer,) = db.execute("select mysmshook.send_sms(%s)", (Jsonb(seed("sms_auth.json")),)).fetchone()
    assert answer == {}
    deliver_due(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and mock.requests[0].json["body"].startswith("Your code is ")
    assert "built-in message was sent instead" in str(job["attempts"])


def test_a_jobs_history_is_bounded(db, mock):
    """The first 10 attempts and the latest 39 are kept, the rest counted in one entry."""
    use_webhook(db, mock.url, SECRET)
    send(db, email_event("signup"))
    db.execute("""update mysmshook.job_queue set attempts = (
                      select jsonb_agg(jsonb_build_object('result', 'provider_failed', 'n', i))
                        from generate_series(1, 200) i)""")
    deliver_due(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and len(job["attempts"]) == 50
    assert [a.get("n") for a in job["attempts"][:10]] == list(range(1, 11))
    assert job["attempts"][10] == {"result": "omitted", "count": 152}
    assert [a.get("n") for a in job["attempts"][11:49]] == list(range(163, 201))
    assert job["attempts"][49]["result"] == "sent"
    # Bounding it again counts what was omitted before: both markers' 152 each, and the 39 + 10
    # entries between them.
    (again,) = db.execute("select mysmshook.bounded_attempts(attempts || attempts) from mysmshook.job_queue").fetchone()
    assert len(again) == 50 and again[10] == {"result": "omitted", "count": 152 * 2 + 39 + 10}


@pytest.mark.parametrize("body,error", [
    ("{{ if .Token }}no end", "has no {{ end }}"),
    ("{{ range .Data.items }}{{ . }}{{ end }}", "range"),
    ("{{ printf \"%s\" .Token }}", "printf"),
    ("{{ if .Tokn }}x{{ end }}", "unknown variable(s) Tokn"),
])
def test_untranslatable_go_templates_are_refused_when_saved(db, body, error):
    with pytest.raises(Exception, match=error.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("}", r"\}")):
        save_template(db, "signup", body=body)
