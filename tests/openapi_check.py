"""Validates requests recorded by a mock provider against the provider's official OpenAPI
description (tests/specs/), with openapi-core: an independent check of our wire format."""

import functools
import json
from pathlib import Path

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPECS = Path(__file__).resolve().parent / "specs"


@functools.cache
def spec(name):
    if name == "twilio":
        # Loaded as JSON: the file has escapes that a YAML loader refuses.
        return OpenAPI.from_dict(json.loads((SPECS / "twilio_api_v2010.json").read_text()))
    return OpenAPI.from_file_path(str(SPECS / "resend.yaml"))


SERVERS = {"twilio": "https://api.twilio.com", "resend": "https://api.resend.com"}


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
    """Raises if the recorded request is not one the provider's API accepts."""
    spec(name).validate_request(_Request(SERVERS[name], recorded))
