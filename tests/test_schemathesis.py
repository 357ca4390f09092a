"""schemathesis over every operation of the OpenAPI document, against the real API over HTTP.

`schemathesis run` (the CLI, as anyone would run it) generates requests from the schema — valid
ones, and the edge cases its coverage phase derives from every constraint — and checks that no
answer is a 5xx and that every answer is one the operation declares: status, content type,
headers and body schema. The stack (`tests/api_stack.py`) has every chat platform and provider
configured, so their callbacks are parsed and refused (401) rather than answered 404, and real
values for the path parameters that name live things (a signer's token, an open request), so
the signing pages and the REST reads run their real code, not only their "not found".

Bounded: a fixed seed and at most `MAX_EXAMPLES` cases per operation keep the run well under
90 s on two cores; `SCHEMATHESIS_MAX_EXAMPLES` / `SCHEMATHESIS_SEED` explore further by hand.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.api_stack import AUTH, api_stack

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "100"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261204")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance")
BIN = Path(sys.executable).parent


def _config(request_id: str, tokens: tuple[str, str]) -> str:
    """Live values for the path parameters; declining uses the second signer, so the first one's
    pages stay open for every other operation whatever order the cases run in."""
    return (f'[headers]\nAuthorization = "{AUTH["Authorization"]}"\n\n'
            f'[parameters]\n"path.token" = "{tokens[0]}"\n"path.request_id" = "{request_id}"\n\n'
            f'[[operations]]\ninclude-path = "/sign/{{token}}/decline"\n'
            f'parameters = {{ "path.token" = "{tokens[1]}" }}\n')


async def test_every_operation_answers_as_declared_and_never_5xx(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with api_stack(dev_env, tmp_path / "data") as stack:
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(stack.request_id, stack.tokens))
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "schemathesis"), "--config-file", str(config), "--no-color", "run", f"{stack.url}/openapi.json",
            "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
            "--seed", SEED, "--workers", "1", "--request-timeout", "20", "--suppress-health-check", "all",
            "--report-dir", str(tmp_path / "report"), "--warnings", "off",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    print(text[-2500:])  # the summary, for `pytest -s`
    assert proc.returncode == 0, text[-12000:]
    assert " passed" in text and "Tested: " in text, text[-3000:]
