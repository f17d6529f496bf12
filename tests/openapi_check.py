"""Validates requests recorded by a mock provider against the provider's official OpenAPI
description, with openapi-core: an independent check of our wire format.

The descriptions are reference data that is not the project's to redistribute: they stay outside
the repository, in ../shared/specs/ seen from its root (its README says where each comes from),
or in the directory MYSMSHOOK_SPECS names. A test that needs a missing one fails, saying so."""

import functools
import json
import os
import urllib.parse
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.media_types.finders import MediaTypeFinder
from openapi_core.templating.paths.finders import APICallPathFinder
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO = Path(__file__).resolve().parent.parent
SPECS = Path(os.environ.get("MYSMSHOOK_SPECS") or REPO.parent / "shared" / "specs")

# Provider kind -> its description in SPECS, and the server its recorded path is joined to (the
# mock stands in for it: the description's server, path included, must match that URL).
DESCRIPTIONS = {
    "twilio": ("twilio_api_v2010.json", "https://api.twilio.com"),
    "twilio_verify": ("twilio_verify_v2.json", "https://verify.twilio.com"),
    "resend": ("resend.yaml", "https://api.resend.com"),
    "vonage": ("vonage_sms.yml", "https://rest.nexmo.com"),
}

FORM = "application/x-www-form-urlencoded"


class UndeclaredFields(OpenAPIError):
    """The body holds fields the operation does not declare: OpenAPI lets an object carry more
    than its schema lists unless it says otherwise, and openapi-core drops a form's extra fields
    before it validates; a provider's API refuses them or, worse, ignores them."""


def spec(name):
    path = SPECS / DESCRIPTIONS[name][0]
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the providers' OpenAPI descriptions are reference data kept outside "
            f"the repository, in ../shared/specs/ seen from its root; set MYSMSHOOK_SPECS to the "
            f"directory that holds them", pytrace=False)
    return _load(path)


@functools.cache
def _load(path):
    if path.suffix == ".json":
        # Loaded as JSON: Twilio's files have escapes that a YAML loader refuses.
        return OpenAPI.from_dict(json.loads(path.read_text()))
    return OpenAPI.from_file_path(str(path))


class _Request:
    full_url_pattern = None

    def __init__(self, host_url, recorded):
        self.host_url = host_url
        self.path = recorded.path
        self.method = recorded.method.lower()
        self.body = recorded.body
        self.content_type = recorded.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(), header=Headers(recorded.headers), cookie=ImmutableMultiDict()
        )


def validate(name, recorded):
    """Raises (an OpenAPIError) if the recorded request is not one the provider's API accepts: an
    operation of the description must match its method and path (the description's server URL
    stripped), take its content type and its credentials (security); its body must hold every
    field the operation requires and no field it does not declare, each of the declared type,
    enum, pattern, length and bounds."""
    openapi = spec(name)
    request = _Request(DESCRIPTIONS[name][1], recorded)
    openapi.validate_request(request)
    _check_field_names(openapi, request)


def _check_field_names(openapi, request):
    found = APICallPathFinder(openapi.spec).find(request.method, urllib.parse.urljoin(request.host_url, request.path))
    if "requestBody" not in found.operation:
        return
    mimetype, _, media_type = MediaTypeFinder(found.operation / "requestBody" / "content").find(request.content_type)
    if "schema" not in media_type:
        return
    schema = media_type / "schema"
    if mimetype == FORM:
        pairs = urllib.parse.parse_qsl(request.body.decode(), keep_blank_values=True)
        body = dict(pairs)
        names = [name for name, _ in pairs]
        # openapi-core keeps one value of a repeated field: the others would go unchecked.
        repeated = sorted({name for name in names if names.count(name) > 1 and not any(
            s.get("type") == "array" for s in _declared(schema).get(name, []))})
        if repeated:
            raise UndeclaredFields(f"fields given more than once in a form: {', '.join(repeated)}")
    elif mimetype == "application/json" or mimetype.endswith("+json"):
        body = json.loads(request.body)
    else:
        return
    undeclared = _undeclared(schema, body)
    if undeclared:
        raise UndeclaredFields(f"fields the description does not declare: {', '.join(undeclared)}")


def _branches(schema):
    """The schema and those its allOf, anyOf and oneOf combine, at any depth."""
    yield schema
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in schema:
            for branch in schema / keyword:
                yield from _branches(branch)


def _declared(schema):
    """Property name -> the schemas that declare it, in any of the schema's branches."""
    declared = {}
    for branch in _branches(schema):
        if "properties" in branch:
            for name in (branch / "properties").keys():
                declared.setdefault(name, []).append(branch / "properties" / name)
    return declared


def _undeclared(schema, value, where=""):
    """The names in value, and in the objects it holds at any depth, that the schema does not
    declare. An object whose schema lists no properties, or allows others (additionalProperties
    other than false), is a free-form map: any name goes."""
    branches = list(_branches(schema))
    if isinstance(value, dict):
        declared = _declared(schema)
        if not declared or any("additionalProperties" in b and (b / "additionalProperties").read_value() is not False
                               for b in branches):
            return []
        names = []
        for name, item in value.items():
            if name not in declared:
                names.append(where + name)
            else:
                names += min((_undeclared(s, item, f"{where}{name}.") for s in declared[name]), key=len)
        return names
    if isinstance(value, list):
        items = [b / "items" for b in branches if "items" in b]
        return [name for i, item in enumerate(value) if items
                for name in min((_undeclared(s, item, f"{where}{i}.") for s in items), key=len)]
    return []
