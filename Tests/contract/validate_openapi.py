#!/usr/bin/env python3
"""Checks recorded DigitalOcean API exchanges against the official OpenAPI document.

Usage: validate_openapi.py SPEC.json EXCHANGES.jsonl

Each line of EXCHANGES is one request and its answer as the simulator recorded them (method, path, query,
requestBody, status, responseHeaders, responseBody). Every request is validated as the client sent it and every
response as the simulator answered it. Exits 0 only when all are valid.
"""
import json
import sys

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

HOST = "https://api.digitalocean.com"


def without_external_discriminators(node):
    """The resolved document keeps discriminator mappings that name the upstream YAML files
    (models/volume_action_post_attach.yml, ...). The anyOf alternatives beside them hold the full schemas, so a
    discriminator whose mapping points outside the document is dropped and anyOf validates as written."""
    if isinstance(node, dict):
        mapping = (node.get("discriminator") or {}).get("mapping") or {}
        if any(not str(target).startswith("#/") for target in mapping.values()):
            node = {key: value for key, value in node.items() if key != "discriminator"}
        return {key: without_external_discriminators(value) for key, value in node.items()}
    if isinstance(node, list):
        return [without_external_discriminators(item) for item in node]
    return node


def main() -> int:
    spec_path, exchanges_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as handle:
        api = OpenAPI.from_dict(without_external_discriminators(json.load(handle)))
    failures = 0
    checked = 0
    with open(exchanges_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            exchange = json.loads(line)
            body = exchange.get("requestBody")
            request = MockRequest(
                HOST,
                exchange["method"].lower(),
                exchange["path"],
                args=exchange.get("query") or {},
                headers={"Authorization": "Bearer token"},
                data=body.encode() if body else None,
                content_type="application/json",
            )
            answer = exchange.get("responseBody") or ""
            headers = exchange.get("responseHeaders") or {}
            response = MockResponse(
                answer.encode(),
                status_code=exchange["status"],
                headers=headers,
                content_type="application/json" if answer else "",
            )
            label = f'{exchange["method"]} {exchange["path"]} -> {exchange["status"]}'
            checked += 1
            problems = []
            try:
                api.validate_request(request)
            except Exception as error:  # noqa: BLE001 - report every kind of validation error
                problems.append(f"request: {describe(error)}")
            try:
                api.validate_response(request, response)
            except Exception as error:  # noqa: BLE001
                problems.append(f"response: {describe(error)}")
            if problems:
                failures += 1
                print(f"INVALID line {number}: {label}")
                for problem in problems:
                    print(f"    {problem}")
            else:
                print(f"valid   {label}")
    print(f"contract: {checked - failures} valid exchanges, {failures} invalid")
    return 0 if failures == 0 and checked > 0 else 1


def describe(error: Exception) -> str:
    text = str(error)
    causes = getattr(error, "__cause__", None)
    details = getattr(causes, "schema_errors", None) if causes else None
    if details:
        text += " | " + "; ".join(str(detail.message) for detail in details)
    elif causes:
        text += f" | {causes}"
    return text


if __name__ == "__main__":
    sys.exit(main())
