"""Every call is attributed to a customer (tenant): the agent's configured
``customer`` (default its own id), a sub-token minted with ``--customer``,
or a JWT's customer claim (``[auth.jwt] customer_claim``). The customer is
in every record (and the OCSF event), and in Cedar as
``context.customer``, so plans can differ per customer; the decision cache
keeps customers apart.
"""

from __future__ import annotations

import json
import subprocess

import httpx

from conftest import release_gate, start_gate, upstream_cfgs
from harness import HOST, HTTP_TIMEOUT_S, TOOLGATE_BIN, Agent, free_port, modern_headers, modern_request
from test_identity import AUDIENCE, ISSUER, IdP

TOOL = "crm__lookup_customer"

POLICY = """
@id("attached")
permit(principal, action, resource);

@id("globex-no-lookups")
forbid(principal, action == Toolgate::Action::"crm__lookup_customer", resource)
when { context.customer == "globex" };
"""


def call(gate, token: str) -> httpx.Response:
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, token), timeout=HTTP_TIMEOUT_S)


def test_calls_are_attributed_and_policies_can_tell_customers_apart(tmp_path, upstreams):
    idp = IdP()
    (tmp_path / "jwks.json").write_text(json.dumps(idp.jwks()))
    (tmp_path / "plans.cedar").write_text(POLICY)
    acme = Agent("acme-bot", [TOOL], customer="acme")
    plain = Agent("plain-bot", [TOOL])
    metrics_port = free_port()
    extra = f"""
[metrics]
listen = "{HOST}:{metrics_port}"

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"
customer_claim = "org_id"

[auth.subtokens]
max_ttl_s = 3600

[policies]
files = ["plans.cedar"]
"""
    gate = start_gate(tmp_path, upstream_cfgs(upstreams), [acme, plain], extra_toml=extra)
    try:
        def mint(*args: str) -> str:
            r = subprocess.run([str(TOOLGATE_BIN), "token", "mint", *args, "-c", str(gate.config_path)],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        results = [
            ("acme", call(gate, acme.key).status_code),
            ("plain-bot", call(gate, plain.key).status_code),
            # The same agent, minted for another customer: attributed to it, and
            # the decision cache does not hand it acme's verdict.
            ("globex", call(gate, mint("--agent", "acme-bot", "--customer", "globex")).status_code),
            ("acme", call(gate, mint("--agent", "acme-bot")).status_code),
            ("initech", call(gate, idp.token(agent="plain-bot", org_id="initech")).status_code),
            ("globex", call(gate, idp.token(agent="plain-bot", org_id="globex")).status_code),
            ("plain-bot", call(gate, idp.token(agent="plain-bot")).status_code),
        ]
        assert [s for _, s in results] == [200, 200, 403, 200, 200, 403, 200]
        records = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
        assert [r["customer"] for r in records] == [c for c, _ in results]
        denied = [r for r in records if r["decision"] == "deny"]
        assert {r["reason"] for r in denied} == {"forbidden_by_policy"}
        assert all(r["policies"] == ["globex-no-lookups"] for r in denied)

        # Per-customer call counts on /metrics.
        text = httpx.get(f"http://{HOST}:{metrics_port}/metrics", timeout=HTTP_TIMEOUT_S).text
        for customer, decision, n in [("globex", "deny", 2), ("acme", "allow", 2), ("plain-bot", "allow", 2),
                                      ("initech", "allow", 1)]:
            line = f'toolgate_customer_calls_total{{customer="{customer}",decision="{decision}"}} {n}'
            assert line in text, (line, [l for l in text.splitlines() if "customer_calls" in l])

        # A customer id that could not be a label is refused at minting.
        r = subprocess.run([str(TOOLGATE_BIN), "token", "mint", "--agent", "acme-bot", "--customer", "a b",
                            "-c", str(gate.config_path)], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "customer" in r.stderr
    finally:
        release_gate(gate)
