#!/usr/bin/env python3
"""Checks docs/openapi.yaml with a real OpenAPI 3.1 validator, then checks
recorded live responses against it: for each one, the operation and status
must be documented, a JSON body must validate against the response schema
(formats included), a documented body must be there and an undocumented one
absent, every required header present, and every header of the watched set
that the server sent documented for that response and valid.

Usage: openapi_check.py SPEC RECORDS.json
RECORDS: [{"method", "path" (the spec's template), "status", "headers"
(lower-case names), "body" (text)}]
"""

import json
import sys
from urllib.parse import quote

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

WATCHED = {
    "etag",
    "cache-control",
    "x-jws-signature",
    "retry-after",
    "access-control-allow-origin",
    "access-control-expose-headers",
}
BASE = "urn:vdh-edge:openapi"


def pointer(*parts):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    spec, _ = read_from_filename(sys.argv[1])
    validate(spec)
    registry = Registry().with_resource(
        BASE, Resource.from_contents(spec, default_specification=DRAFT202012)
    )

    def deref(node, where):
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            where = tuple(p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/"))
            node = spec
            for p in where:
                node = node[p]
        return node, where

    def check_schema(where, value):
        ref = BASE + "#" + quote(pointer(*where), safe="/~")
        v = OAS31Validator({"$ref": ref}, registry=registry, format_checker=OAS31Validator.FORMAT_CHECKER)
        errors = sorted(v.iter_errors(value), key=lambda e: list(e.path))
        return ["%s: %s" % ("/".join(map(str, e.path)) or "(body)", e.message) for e in errors]

    records = json.load(open(sys.argv[2]))
    failures = []
    for r in records:
        name = "%s %s -> %s" % (r["method"], r["path"], r["status"])
        op = spec["paths"].get(r["path"], {}).get(r["method"].lower())
        if op is None:
            failures.append("%s: operation not documented" % name)
            continue
        responses = op["responses"]
        key = str(r["status"])
        if key not in responses:
            failures.append("%s: status not documented" % name)
            continue
        resp, where = deref(responses[key], ("paths", r["path"], r["method"].lower(), "responses", key))
        headers = r["headers"]
        documented = {k.lower(): (v, where + ("headers", k)) for k, v in resp.get("headers", {}).items()}
        for h, (hv, hwhere) in documented.items():
            hv, hwhere = deref(hv, hwhere)
            if hv.get("required") and h not in headers:
                failures.append("%s: required header %s missing" % (name, h))
            if h in headers:
                value = headers[h]
                if hv.get("schema", {}).get("type") == "integer":
                    try:
                        value = int(value)
                    except ValueError:
                        failures.append("%s: header %s is not an integer" % (name, h))
                        continue
                for e in check_schema(hwhere + ("schema",), value):
                    failures.append("%s: header %s: %s" % (name, h, e))
        for h in WATCHED & set(headers):
            if h not in documented:
                failures.append("%s: header %s sent but not documented" % (name, h))
        content = resp.get("content")
        ctype = headers.get("content-type", "").split(";")[0].strip()
        if not content:
            if r["body"]:
                failures.append("%s: a body where none is documented" % name)
            continue
        if ctype not in content:
            failures.append("%s: content type %r not documented (%s)" % (name, ctype, ", ".join(content)))
            continue
        if not ctype.endswith("json"):
            continue
        try:
            body = json.loads(r["body"])
        except ValueError as e:
            failures.append("%s: body is not JSON: %s" % (name, e))
            continue
        for e in check_schema(where + ("content", ctype, "schema"), body):
            failures.append("%s: %s" % (name, e))
    for f in failures:
        print(f)
    print("validated %d responses, %d problems" % (len(records), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
