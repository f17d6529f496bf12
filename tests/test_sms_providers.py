"""The regional and Supabase-built-in SMS providers against a recording mock: the exact request
each sends (path, authentication, every field; validated against the official OpenAPI description
of those that publish one: Vonage, Twilio Verify) and what its answers do to the job."""

import json
import urllib.parse

import pytest
from openapi_core.exceptions import OpenAPIError

import openapi_check
from conftest import add_provider, jobs, run_worker, set_chain
from mock_provider import Recorded, ok_json
from test_providers import basic, enqueue, mocks, sms_event  # noqa: F401 (fixture)

CODE = "482913"
SID = "AC0123456789abcdef0123456789abcdef"
SERVICE = "VA0123456789abcdef0123456789abcdef"


def form(req):
    return dict(urllib.parse.parse_qsl(req.body.decode(), keep_blank_values=True))


def remaining_life(value, job, scale=1):
    """A field that says how long the code has left: about the SMS code lifetime (60 s)."""
    return 50 * scale <= int(value) <= 61 * scale


# kind -> settings (base_url added), accepted answer, check(request, job), message id
PROVIDERS = {
    "vonage": (
        {"api_key": "abcd1234", "api_secret": "abcdef0123456789", "from": "Acme",
         "status_callback": "https://hooks.acme.test/dlr"},
        ok_json({"message-count": "1", "messages": [
            {"to": "12125550123", "message-id": "0C000000217B7F02", "status": "0"}]}),
        lambda req, job: (
            req.path == "/sms/json"
            and req.headers["content-type"] == "application/x-www-form-urlencoded"
            and set(form(req)) == {"api_key", "api_secret", "from", "to", "text", "client-ref", "ttl", "callback"}
            and form(req)["api_key"] == "abcd1234" and form(req)["api_secret"] == "abcdef0123456789"
            and form(req)["to"] == "12125550123" and form(req)["from"] == "Acme"
            and CODE in form(req)["text"] and form(req)["client-ref"] == str(job["job_id"])
            and remaining_life(form(req)["ttl"], job, 1000) and form(req)["callback"] == "https://hooks.acme.test/dlr"),
        "0C000000217B7F02",
    ),
    "messagebird": (
        {"access_key": "live_abc", "originator": "Acme", "status_callback": "https://hooks.acme.test/dlr"},
        ok_json({"id": "c3cddce045416dab6378c58b96540915",
                 "recipients": {"totalCount": 1, "totalSentCount": 1}}, status=201),
        lambda req, job: (
            req.path == "/messages" and req.headers["authorization"] == "AccessKey live_abc"
            and req.headers["content-type"] == "application/json"
            and set(req.json) == {"originator", "recipients", "body", "reference", "datacoding", "validity", "reportUrl"}
            and req.json["recipients"] == ["12125550123"] and CODE in req.json["body"]
            and req.json["reference"] == str(job["job_id"]) and req.json["datacoding"] == "auto"
            and remaining_life(req.json["validity"], job) and req.json["reportUrl"] == "https://hooks.acme.test/dlr"),
        "c3cddce045416dab6378c58b96540915",
    ),
    "textlocal": (
        {"api_key": "tl-key", "sender": "ACMEIN"},
        ok_json({"balance": 995, "batch_id": 244712728, "cost": 1, "num_messages": 1,
                 "messages": [{"id": "119713472", "recipient": 12125550123}], "status": "success"}),
        lambda req, job: (
            req.path == "/send/" and set(form(req)) == {"apikey", "numbers", "sender", "message", "custom", "validity"}
            and form(req)["apikey"] == "tl-key" and form(req)["numbers"] == "12125550123"
            and form(req)["sender"] == "ACMEIN" and CODE in form(req)["message"]
            and form(req)["custom"] == str(job["job_id"])
            and 50 <= int(form(req)["validity"]) - int(job["created_at"].timestamp()) <= 61),
        "119713472",
    ),
    "msg91": (
        {"auth_key": "msg91-key", "template_id": "6523f0b6d6fc0571e1234567", "sender": "ACMEIN"},
        ok_json({"type": "success", "message": "5762846b4f8d285d378b4567"}),
        lambda req, job: (
            req.path == "/api/v5/flow" and req.headers["authkey"] == "msg91-key"
            and req.json == {"template_id": "6523f0b6d6fc0571e1234567", "short_url": "0", "sender": "ACMEIN",
                             "recipients": [{"mobiles": "12125550123", "OTP": CODE}]}),
        "5762846b4f8d285d378b4567",
    ),
    "africastalking": (
        {"username": "acme", "api_key": "at-key", "from": "ACME"},
        ok_json({"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000", "Recipients": [
            {"statusCode": 101, "number": "+12125550123", "status": "Success", "cost": "KES 0.8000",
             "messageId": "ATXid_1", "messageParts": 1}]}}, status=201),
        lambda req, job: (
            req.path == "/version1/messaging" and req.headers["apikey"] == "at-key"
            and req.headers["accept"] == "application/json"
            and form(req) == {"username": "acme", "to": "+12125550123", "from": "ACME",
                              "message": form(req)["message"]} and CODE in form(req)["message"]),
        "ATXid_1",
    ),
    "plivo": (
        {"auth_id": "MAXXXXXXXXXXXXXXXXXX", "auth_token": "pl-token", "src": "ACME",
         "dlt_entity_id": "1201159", "dlt_template_id": "1207161", "dlt_template_category": "transactional",
         "status_callback": "https://hooks.acme.test/dlr"},
        ok_json({"message": "message(s) queued", "message_uuid": ["db3ce55a-7f1d-11e1-8ea7-1231380bc196"],
                 "api_id": "db342550-7f1d-11e1-8ea7-1231380bc196"}, status=202),
        lambda req, job: (
            req.path == "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/"
            and req.headers["authorization"] == basic("MAXXXXXXXXXXXXXXXXXX", "pl-token")
            and set(req.json) == {"src", "dst", "text", "type", "message_expiry", "url", "method",
                                  "dlt_entity_id", "dlt_template_id", "dlt_template_category"}
            and req.json["dst"] == "+12125550123" and CODE in req.json["text"] and req.json["type"] == "sms"
            and remaining_life(req.json["message_expiry"], job) and req.json["method"] == "POST"
            and req.json["dlt_template_id"] == "1207161"),
        "db3ce55a-7f1d-11e1-8ea7-1231380bc196",
    ),
    "twilio_verify": (
        {"account_sid": SID, "auth_token": "tw-token", "service_sid": SERVICE},
        ok_json({"sid": "VE0123456789abcdef0123456789abcdef", "status": "pending"}, status=201),
        lambda req, job: (
            req.path == f"/v2/Services/{SERVICE}/Verifications"
            and req.headers["authorization"] == basic(SID, "tw-token")
            and form(req) == {"To": "+12125550123", "Channel": "sms", "CustomCode": CODE, "Locale": "en"}),
        "VE0123456789abcdef0123456789abcdef",
    ),
}


def configure(db, mock, kind):
    settings = dict(PROVIDERS[kind][0], base_url=mock.url)
    add_provider(db, kind, kind, settings)
    set_chain(db, "sms", [kind])


@pytest.mark.parametrize("kind", PROVIDERS)
def test_wire_format(db, mocks, kind):
    _, accepted, check, message_id = PROVIDERS[kind]
    mock = mocks(lambda req: accepted)
    configure(db, mock, kind)
    enqueue(db, "send_sms", sms_event("+12125550123", otp=CODE))
    run_worker(db)
    [req] = mock.requests
    [job] = jobs(db)
    assert check(req, job), (req.path, req.headers, req.body)
    if kind in openapi_check.DESCRIPTIONS:  # the providers that publish an OpenAPI description
        openapi_check.validate(kind, req)
    assert job["status"] == "completed" and job["provider"] == kind, job["last_error"]
    assert job["provider_message_id"] == message_id


# --- The OpenAPI check itself (no database) -----------------------------------------------

FORM, JSON = "application/x-www-form-urlencoded", "application/json"

# kind -> a request its description accepts: path, content type, fields, headers
REFERENCE_REQUESTS = {
    "twilio": (f"/2010-04-01/Accounts/{SID}/Messages.json", FORM,
               {"To": "+12125550123", "From": "+15005550006", "Body": f"Your code is {CODE}"},
               {"authorization": basic(SID, "tw-token")}),
    "twilio_verify": (f"/v2/Services/{SERVICE}/Verifications", FORM,
                      {"To": "+12125550123", "Channel": "sms", "CustomCode": CODE, "Locale": "en"},
                      {"authorization": basic(SID, "tw-token")}),
    "resend": ("/emails", JSON,
               {"from": "Acme <auth@acme.test>", "to": ["john@soupbase.io"], "subject": "Your code",
                "text": f"Your code is {CODE}", "tags": [{"name": "category", "value": "sms"}]},
               {"authorization": "Bearer re_123456789"}),
    "vonage": ("/sms/json", FORM,
               {"api_key": "abcd1234", "api_secret": "abcdef0123456789", "from": "Acme", "to": "12125550123",
                "text": f"Your code is {CODE}", "type": "unicode", "ttl": "60000"},
               {}),
}


def recorded(path, content_type, fields, headers):
    """The request as the mock would record it; fields a dict, or a form's list of pairs."""
    body = json.dumps(fields) if content_type == JSON else urllib.parse.urlencode(fields)
    return Recorded("POST", path, dict(headers, **{"content-type": content_type}), body.encode())


def without(fields, name):
    return {k: v for k, v in fields.items() if k != name}


# (kind, what is wrong, the reference request made wrong, words of the refusal)
WRONG = [
    ("twilio", "undeclared field", lambda p, c, f, h: (p, c, dict(f, Priority="high"), h), "not declare: Priority"),
    ("twilio", "required field missing", lambda p, c, f, h: (p, c, without(f, "To"), h), "'To' is a required"),
    ("twilio", "field repeated", lambda p, c, f, h: (p, c, [*f.items(), ("To", "+12125550124")], h),
     "more than once in a form: To"),
    ("twilio", "not an integer", lambda p, c, f, h: (p, c, dict(f, ValidityPeriod="soon"), h),
     "cast value to integer"),
    ("twilio", "JSON body", lambda p, c, f, h: (p, JSON, f, h), "mimetype not found"),
    ("twilio", "unknown path", lambda p, c, f, h: (p.replace("Messages", "Message"), c, f, h), "not found"),
    ("twilio", "no credentials", lambda p, c, f, h: (p, c, f, {}), "Security not found"),
    ("twilio_verify", "undeclared field", lambda p, c, f, h: (p, c, dict(f, CodeLength="6"), h),
     "not declare: CodeLength"),
    ("twilio_verify", "required field missing", lambda p, c, f, h: (p, c, without(f, "Channel"), h),
     "'Channel' is a required"),
    ("twilio_verify", "not in the enum", lambda p, c, f, h: (p, c, dict(f, RiskCheck="maybe"), h), "is not one of"),
    ("twilio_verify", "service SID off the pattern", lambda p, c, f, h: (p.replace(SERVICE, "VA1"), c, f, h),
     "path parameter: ServiceSid"),
    ("twilio_verify", "JSON body", lambda p, c, f, h: (p, JSON, f, h), "mimetype not found"),
    ("twilio_verify", "no credentials", lambda p, c, f, h: (p, c, f, {}), "Security not found"),
    ("resend", "undeclared field", lambda p, c, f, h: (p, c, dict(f, sender="x"), h), "not declare: sender"),
    ("resend", "undeclared field in a nested object",
     lambda p, c, f, h: (p, c, dict(f, tags=[{"name": "category", "value": "sms", "kind": "x"}]), h),
     "not declare: tags.0.kind"),
    ("resend", "required field missing", lambda p, c, f, h: (p, c, without(f, "subject"), h), "'subject' is a required"),
    ("resend", "not a string", lambda p, c, f, h: (p, c, dict(f, subject=5), h), "5 is not of type 'string'"),
    ("resend", "form body", lambda p, c, f, h: (p, FORM, f, h), "mimetype not found"),
    ("resend", "unknown path", lambda p, c, f, h: ("/email", c, f, h), "not found"),
    ("resend", "no credentials", lambda p, c, f, h: (p, c, f, {}), "Security not found"),
    ("vonage", "undeclared field", lambda p, c, f, h: (p, c, dict(f, expiry="60"), h), "not declare: expiry"),
    ("vonage", "required field missing", lambda p, c, f, h: (p, c, without(f, "to"), h), "'to' is a required"),
    ("vonage", "number too short", lambda p, c, f, h: (p, c, dict(f, to="12125"), h), "is too short"),
    ("vonage", "ttl below the minimum", lambda p, c, f, h: (p, c, dict(f, ttl="5000"), h),
     "less than the minimum of 20000"),
    ("vonage", "not in the enum", lambda p, c, f, h: (p, c, dict(f, type="utf8"), h), "is not one of"),
    ("vonage", "JSON body", lambda p, c, f, h: (p, JSON, f, h), "mimetype not found"),
    ("vonage", "unknown format", lambda p, c, f, h: ("/sms/yaml", c, f, h), "path parameter: format"),
    ("vonage", "path outside the server's", lambda p, c, f, h: ("/json", c, f, h), "Server not found"),
]


@pytest.mark.parametrize("kind,wrong,words", [(kind, wrong, words) for kind, _, wrong, words in WRONG],
                         ids=[f"{kind}: {what}" for kind, what, _, _ in WRONG])
def test_openapi_check_refuses_what_the_description_does_not_allow(kind, wrong, words):
    """The check the wire-format tests rely on: the provider's reference request passes; the
    same request with one thing wrong is refused, for that reason."""
    openapi_check.validate(kind, recorded(*REFERENCE_REQUESTS[kind]))
    with pytest.raises(OpenAPIError, match=words):
        openapi_check.validate(kind, recorded(*wrong(*REFERENCE_REQUESTS[kind])))


def test_a_missing_description_fails_the_test(monkeypatch, tmp_path):
    monkeypatch.setattr(openapi_check, "SPECS", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="vonage_sms.yml is missing.*MYSMSHOOK_SPECS"):
        openapi_check.validate("vonage", recorded(*REFERENCE_REQUESTS["vonage"]))


# kind -> [(answer, what the chain made of it, words in the error)]
ANSWERS = {
    "vonage": [
        (ok_json({"messages": [{"status": "7", "error-text": "Number barred"}]}), "recipient_rejected", "status 7"),
        (ok_json({"messages": [{"status": "1", "error-text": "Throughput Rate Exceeded"}]}), "retryable", "status 1"),
        (ok_json({"messages": [{"status": "4", "error-text": "Bad Credentials"}]}), "provider_failed",
         "authentication failed"),
    ],
    "messagebird": [
        (ok_json({"errors": [{"code": 9, "description": "no (correct) recipients found", "parameter": "recipient"}]},
                 status=422), "recipient_rejected", "error 9"),
        (ok_json({"errors": [{"code": 2, "description": "Request not allowed (incorrect access_key)",
                              "parameter": "access_key"}]}, status=401), "provider_failed", "authentication failed"),
        ((503, {"content-type": "text/html"}, b"<html>unavailable</html>"), "retryable", "HTTP 503"),
    ],
    "textlocal": [
        (ok_json({"errors": [{"code": 51, "message": "No valid numbers specified"}], "status": "failure"}),
         "recipient_rejected", "error 51"),
        (ok_json({"errors": [{"code": 7, "message": "Insufficient credits"}], "status": "failure"}),
         "provider_failed", "Insufficient credits"),
        (ok_json({"errors": [{"code": 192, "message": "You cannot send message at this time"}], "status": "failure"}),
         "retryable", "error 192"),
    ],
    "msg91": [
        (ok_json({"type": "error", "message": "Invalid mobile number", "code": "202"}), "recipient_rejected",
         "error 202"),
        (ok_json({"type": "error", "message": "IP not whitelisted", "code": "418"}), "provider_failed", "whitelist"),
        (ok_json({"type": "error", "message": "Internal error", "code": "506"}), "retryable", "error 506"),
    ],
    "africastalking": [
        (ok_json({"SMSMessageData": {"Message": "Sent to 0/1", "Recipients": [
            {"statusCode": 406, "number": "+12125550123", "status": "UserInBlacklist", "messageId": "None"}]}},
            status=201), "recipient_rejected", "status 406"),
        ((401, {"content-type": "text/plain"}, b"The supplied authentication is invalid"), "provider_failed",
         "authentication failed"),
        (ok_json({"SMSMessageData": {"Message": "Sent to 0/1", "Recipients": [
            {"statusCode": 500, "number": "+12125550123", "status": "InternalServerError"}]}}, status=201),
         "retryable", "status 500"),
    ],
    "plivo": [
        (ok_json({"api_id": "a", "error": "'12125550123' is not a valid phone number."}, status=400),
         "recipient_rejected", "not a valid phone number"),
        (ok_json({"api_id": "a", "error": "authentication failed"}, status=401), "provider_failed",
         "authentication failed"),
        (ok_json({"api_id": "a", "error": "too many requests"}, status=429, headers={"retry-after": "20"}),
         "retryable", "HTTP 429"),
    ],
    "twilio_verify": [
        (ok_json({"code": 60205, "message": "SMS is not supported by landline phone number", "status": 403},
                 status=403), "recipient_rejected", "60205"),
        (ok_json({"code": 60204, "message": "Service does not support this feature", "status": 403}, status=403),
         "provider_failed", "custom verification codes"),
        (ok_json({"code": 60212, "message": "Too many concurrent requests for phone number", "status": 429},
                 status=429), "retryable", "60212"),
    ],
}


@pytest.mark.parametrize("kind,case", [(k, i) for k in ANSWERS for i in range(len(ANSWERS[k]))])
def test_answers(db, mocks, kind, case):
    """The provider first, the built-in log provider after it: a refused recipient ends the
    chain (the job fails), any other failure lets the next provider deliver."""
    answer, result, words = ANSWERS[kind][case]
    mock = mocks(lambda req: answer)
    configure(db, mock, kind)
    set_chain(db, "sms", [kind, "log"])
    enqueue(db, "send_sms", sms_event("+12125550123", otp=CODE))
    run_worker(db)
    [job] = jobs(db)
    assert len(mock.requests) == 1
    first = job["attempts"][0]
    assert (first["provider"], first["result"]) == (kind, result) and words in first["error"], first
    if result == "recipient_rejected":
        assert job["status"] == "failed" and len(job["attempts"]) == 1
    else:
        assert job["status"] == "completed" and job["provider"] == "log"


def test_settings_are_checked_when_saved(db):
    for kind, settings, words in [
        ("vonage", {"api_key": "k", "from": "Acme"}, "api_secret"),
        ("messagebird", {"originator": "Acme"}, "access_key"),
        ("textlocal", {"api_key": "k"}, "sender"),
        ("msg91", {"auth_key": "k"}, "template_id"),
        ("africastalking", {"api_key": "k"}, "username"),
        ("plivo", {"auth_id": "MA1", "auth_token": "t"}, "src"),
        ("twilio_verify", {"account_sid": SID, "auth_token": "t", "service_sid": "VA1"}, "service_sid"),
    ]:
        with pytest.raises(Exception, match=words):
            add_provider(db, f"bad_{kind}", kind, settings)


def test_providers_of_different_kinds_in_one_chain(db, mocks):
    """Verify without custom codes fails over to Vonage, which delivers."""
    verify = mocks(lambda req: ok_json({"code": 60204, "message": "Service does not support this feature",
                                        "status": 403}, status=403))
    vonage = mocks(lambda req: PROVIDERS["vonage"][1])
    add_provider(db, "verify", "twilio_verify", dict(PROVIDERS["twilio_verify"][0], base_url=verify.url))
    add_provider(db, "vonage", "vonage", dict(PROVIDERS["vonage"][0], base_url=vonage.url))
    set_chain(db, "sms", ["verify", "vonage"])
    enqueue(db, "send_sms", sms_event("+12125550123", otp=CODE))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "vonage"
    assert [a["provider"] for a in job["attempts"]] == ["verify", "vonage"]
    assert json.dumps(job["attempts"]).count("custom verification codes") == 1
