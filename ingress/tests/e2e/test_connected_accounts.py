"""Connected accounts: for an upstream with ``[upstreams.identity] mode =
"connected_account"`` toolgate runs the OAuth authorization code flow with
PKCE itself (``/connect/{upstream}`` and its callback on the agent listener),
keeps each user's refresh token sealed in the control store, renews their
access tokens off the request path, and sends each call with its own user's
access token. A user who has not connected is told how, as a URL-mode
elicitation where the client takes one.

    agent (SDK client or hand-written HTTP; each user's IdP token)
        -> toolgate ([auth.jwt]; [connected_accounts]; admin API on)
            -> mail  whoami_server.py --bearer  (connected_account; only the user's own token, aud = mail)
        provider: exchange_idp.mjs, the `oidc-provider` package (authorization code + PKCE, refresh tokens,
                  its development login and consent pages)
        browser: an httpx client with a cookie jar, following each redirect by hand

The user's login token at the front door is minted here with the IdP's key
(the step a browser login would take); the connect flow itself is the real
provider's, page by page.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx
import pytest

from conftest import release_gate, start_gate
from harness import (
    E2E_DIR,
    HOST,
    HTTP_TIMEOUT_S,
    MODERN_VERSION,
    Agent,
    Gate,
    free_port,
    modern_headers,
    modern_request,
    sdk_client_cm,
    spawn_server,
    stop_process,
    toml_value,
)
from pg_cluster import PgCluster, pg_bin
from test_identity_assertions import WhoamiProc
from test_token_exchange import ExchangeIdP, front_door_toml

CONNECT_CLIENT = "toolgate-connect"
CONNECT_SECRET = "connect-client-secret-canary-5d21"
SEALING_KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="  # 32 bytes, base64
ACCESS_TTL_S = 20
ADMIN_TOKEN = "admin-token-connected-accounts"
ON_BEHALF_OF = "Toolgate-On-Behalf-Of"


def accounts_toml(idp: ExchangeIdP, mail_url: str) -> str:
    """The front door's IdP, `[connected_accounts]` (its `public_url` the
    gate's own, filled in by `at_own_port`) and the `mail` upstream."""
    return front_door_toml(idp) + f"""
[connected_accounts]
key_file = "connections.key"
public_url = "http://{HOST}:GATE_PORT"
link_lifetime_s = 120

[[upstreams]]
name = "mail"
url = {toml_value(mail_url)}
timeout_ms = 10000
[upstreams.identity]
mode = "connected_account"
[upstreams.identity.connect]
authorize_url = {toml_value(idp.issuer + '/auth')}
token_url = {toml_value(idp.issuer + '/token')}
client_id = {toml_value(CONNECT_CLIENT)}
client_secret_file = "connect.secret"
scope = "tools"
resource = {toml_value(mail_url)}
"""


def at_own_port(gate: Gate) -> None:
    """Writes the gate's config again with its own port as `public_url`, and
    the files the config names."""
    gate.extra_toml = gate.extra_toml.replace("GATE_PORT", str(gate.port))
    gate.config_path.write_text(gate.render_config())
    (gate.workdir / "connect.secret").write_text(CONNECT_SECRET + "\n")
    (gate.workdir / "connections.key").write_text(SEALING_KEY + "\n")


def new_mail() -> WhoamiProc:
    """The `mail` upstream (not started): takes only a token the provider
    issued for it."""
    mail = WhoamiProc("mail", audience="", header="Authorization")
    mail.audience = mail.url
    return mail


def start_mail(mail: WhoamiProc, idp: ExchangeIdP, logs) -> WhoamiProc:
    mail.log_path = logs / "whoami-mail.log"
    mail.proc = spawn_server(
        [sys.executable, str(E2E_DIR / "whoami_server.py"), str(mail.port), "--jwks-url", f"{idp.issuer}/jwks",
         "--issuer", idp.issuer, "--audience", mail.audience, "--header", "Authorization", "--bearer"],
        mail.log_path, mail.port)
    return mail


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("connected")
    logs = tmp_path_factory.mktemp("connected-logs")
    mail = new_mail()
    idp = ExchangeIdP(work)
    admin_port = free_port()
    admin = f"""
[admin]
listen = "{HOST}:{admin_port}"
[[admin.tokens]]
name = "ops"
token_sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"
"""
    billing_port = free_port()
    billing_api = f"http://{HOST}:{billing_port}"
    billing = f"""
[[upstreams]]
name = "billing"
kind = "openapi"
spec = {toml_value(billing_api + '/openapi.json')}
[upstreams.identity]
mode = "connected_account"
[upstreams.identity.connect]
authorize_url = {toml_value(idp.issuer + '/auth')}
token_url = {toml_value(idp.issuer + '/token')}
client_id = {toml_value(CONNECT_CLIENT)}
client_secret_file = "connect.secret"
scope = "tools"
"""
    extra = accounts_toml(idp, mail.url) + billing + admin
    tools = ["mail__whoami", "billing__listInvoices"]
    agents = [Agent("support-bot", tools), Agent("batch-bot", tools, act_for_users=True)]
    gate = start_gate(work, [], agents, extra_toml=extra, start=False)
    at_own_port(gate)
    gate.billing_api = billing_api
    started: list[Any] = []
    try:
        started.append(SpawnedProc(spawn_server([sys.executable, str(E2E_DIR / "billing_api.py"), str(billing_port)],
                                                logs / "billing.log", billing_port)))
        callback = f"http://{HOST}:{gate.port}/connect/mail/callback"
        idp.start([mail.url], gate.port, connect={"client_id": CONNECT_CLIENT, "client_secret": CONNECT_SECRET,
                                                  "redirect_uris": [callback], "resources": [mail.url],
                                                  "ttl_s": ACCESS_TTL_S})
        started.append(idp)
        started.append(start_mail(mail, idp, logs))
        gate.start()
        yield gate, idp, mail, f"http://{HOST}:{admin_port}"
    finally:
        release_gate(gate)
        for p in reversed(started):
            p.stop()


class SpawnedProc:
    """A helper server started here, stopped by its pid."""

    def __init__(self, proc) -> None:
        self.proc = proc

    def stop(self) -> None:
        stop_process(self.proc)


def call(gate: Gate, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": "mail__whoami", "arguments": {}})
    h = modern_headers("tools/call", "mail__whoami", token)
    h.update(headers or {})
    return httpx.post(gate.url, json=body, headers=h, timeout=HTTP_TIMEOUT_S)


def with_url_elicitation(body: dict[str, Any]) -> dict[str, Any]:
    """The same request from a client that declares URL-mode elicitation."""
    meta = body["params"]["_meta"]
    caps = meta["io.modelcontextprotocol/clientCapabilities"]
    caps["elicitation"] = {"url": {}}
    return body


def connect_link(gate: Gate, token: str) -> str:
    r = call(gate, token)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == -32003, err
    return err["data"]["connect_url"]


def browser_connects(link: str, user: str, *, cookies_from: httpx.Client | None = None) -> httpx.Response:
    """A user's browser: opens the link, signs in and consents at the
    provider's pages, and follows the provider back to toolgate. Returns
    toolgate's answer to the callback."""
    browser = cookies_from or httpx.Client(timeout=HTTP_TIMEOUT_S)
    url = link
    for _ in range(20):
        r = browser.get(url)
        if r.status_code in (302, 303):
            url = urljoin(url, r.headers["location"])
            if "/connect/mail/callback" in url:
                return browser.get(url)
            continue
        assert r.status_code == 200, (url, r.status_code, r.text[:500])
        form = re.search(r'<form[^>]*action="([^"]+)"', r.text)
        assert form, r.text[:500]
        action = urljoin(url, form.group(1))
        if 'name="login"' in r.text:
            data = {"prompt": "login", "login": user, "password": "any"}
        else:
            data = {"prompt": "consent"}
        r = browser.post(action, data=data)
        assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        url = urljoin(action, r.headers["location"])
        if "/connect/mail/callback" in url:
            return browser.get(url)
    raise AssertionError("the consent never came back to toolgate")


def records(gate: Gate, where, n: int = 1) -> list[dict[str, Any]]:
    return gate.audit_lines(n, where=where, exact=False)[-n:]


def test_a_user_connects_through_the_browser_and_calls_with_their_own_token(setup):
    gate, idp, mail, _ = setup
    alice = idp.user_token("alice")
    link = connect_link(gate, alice)
    assert link.startswith(f"http://{HOST}:{gate.port}/connect/mail?link="), link
    rec = records(gate, lambda r: r.get("reason") == "user_not_connected")[0]
    assert rec["user"] == "alice" and rec["identity"]["token"] == "not_connected", rec
    r = browser_connects(link, "alice")
    assert r.status_code == 200 and "connected" in r.text, r.text
    rec = records(gate, lambda r: r.get("reason") == "account_connected")[0]
    assert (rec["user"], rec["upstream"], rec["method"]) == ("alice", "mail", "connect/callback"), rec
    v = json.loads(call(gate, alice).json()["result"]["content"][0]["text"])
    assert v["verified"] is True and v["sub"] == "alice", v
    assert v["claims"]["aud"] == mail.url and v["claims"]["client_id"] == CONNECT_CLIENT, v
    sent = mail.calls()[-1]["assertion"]
    assert sent.removeprefix("Bearer ") != alice, "the agent's token went upstream"
    rec = records(gate, lambda r: r.get("tool") == "mail__whoami" and r.get("decision") == "allow")[0]
    assert rec["identity"] == {"mode": "connected_account", "token": "connected"}, rec


def test_each_user_gets_only_their_own_account(setup):
    gate, idp, _, _ = setup
    bob = idp.user_token("bob")
    browser_connects(connect_link(gate, bob), "bob")
    tokens = {u: idp.user_token(u) for u in ("alice", "bob")}

    async def scenario() -> dict[str, Any]:
        seen = {}
        for user, token in tokens.items():
            async with sdk_client_cm(gate.url, token, MODERN_VERSION) as client:
                r = await client.call_tool("mail__whoami", {})
                seen[user] = json.loads(r.content[0].text)
        return seen

    seen = anyio.run(scenario)
    assert seen["alice"]["sub"] == "alice" and seen["bob"]["sub"] == "bob", seen


def test_a_client_taking_url_elicitation_gets_one(setup):
    gate, idp, _, _ = setup
    body = with_url_elicitation(modern_request("tools/call", {"name": "mail__whoami", "arguments": {}}))
    h = modern_headers("tools/call", "mail__whoami", idp.user_token("carol"))
    r = httpx.post(gate.url, json=body, headers=h, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    err = r.json()["error"]
    assert err["code"] == -32042, err
    (e,) = err["data"]["elicitations"]
    assert e["mode"] == "url" and e["url"] == err["data"]["connect_url"] and e["elicitationId"], e
    assert "/connect/mail?link=" in e["url"]


def test_a_rest_caller_gets_a_json_error_with_the_link_and_nothing_is_sent(setup):
    gate, idp, _, _ = setup
    h = {"Authorization": f"Bearer {idp.user_token('alice')}"}
    r = httpx.get(f"{gate.base}/rest/billing/invoices", headers=h, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "user_not_connected", body
    assert body["connect_url"].startswith(f"http://{HOST}:{gate.port}/connect/billing?link="), body
    assert body["connect_url"] in body["message"], body
    seen = httpx.get(f"{gate.billing_api}/_seen", timeout=HTTP_TIMEOUT_S).json()
    assert not [s for s in seen if s["raw_path"].startswith("/invoices")], seen
    rec = records(gate, lambda x: x.get("door") == "rest" and x.get("reason") == "user_not_connected")[0]
    assert (rec["user"], rec["upstream"]) == ("alice", "billing"), rec


def test_links_and_states_cannot_be_forged_replayed_or_moved_between_browsers(setup):
    gate, idp, _, _ = setup
    link = connect_link(gate, idp.user_token("dave"))
    base = f"http://{HOST}:{gate.port}/connect/mail"
    for bad in (base + "?link=AAAA", base, link.replace("link=", "link=x")):
        r = httpx.get(bad, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 400 and "link is invalid" in r.text, (bad, r.text)
    assert records(gate, lambda r: r.get("reason") == "connect_link_invalid")
    # Another browser than the one that started the consent.
    browser = httpx.Client(timeout=HTTP_TIMEOUT_S)
    start = browser.get(link)
    assert start.status_code == 302
    state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
    r = httpx.get(f"{base}/callback?state={state}&code=whatever", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400 and "another browser" in r.text, r.text
    # A tampered state, then the real flow, then its replay.
    r = browser.get(f"{base}/callback?state={state[:-2]}xx&code=whatever")
    assert r.status_code == 400
    ok = browser_connects(link, "dave", cookies_from=browser)
    assert ok.status_code == 200, ok.text
    replay = browser.get(str(ok.request.url))
    assert replay.status_code == 400 and "used already" in replay.text, replay.text
    recs = [r for r in gate.read_audit() if r.get("reason") == "connect_state_invalid"]
    assert len(recs) >= 3 and all(r["method"] == "connect/callback" for r in recs), recs


def test_behind_a_signing_in_proxy_a_link_serves_only_the_user_it_names(setup, tmp_path):
    """`user_header`: the proxy in front of `/connect/` names the browser's
    user; a link (and the consent it starts) serves only that user."""
    _, idp, mail, _ = setup
    extra = accounts_toml(idp, mail.url).replace(
        "link_lifetime_s = 120", 'link_lifetime_s = 120\nuser_header = "X-Signed-In-User"')
    gate = start_gate(tmp_path, [], [Agent("support-bot", ["mail__whoami"])], extra_toml=extra, start=False)
    at_own_port(gate)
    gate.start()
    try:
        link = connect_link(gate, idp.user_token("kim"))
        for headers, want in (({}, 403), ({"X-Signed-In-User": "lee"}, 403), ({"X-Signed-In-User": "kim"}, 302)):
            r = httpx.get(link, headers=headers, timeout=HTTP_TIMEOUT_S)
            assert r.status_code == want, (headers, r.status_code, r.text)
        mismatch = records(gate, lambda x: x.get("reason") == "connect_user_mismatch", 2)
        assert all(m["user"] == "kim" and m["method"] == "connect" for m in mismatch), mismatch
        # A consent kim started, finished in a browser signed in as lee.
        browser = httpx.Client(timeout=HTTP_TIMEOUT_S, headers={"X-Signed-In-User": "kim"})
        start = browser.get(link)
        state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
        r = browser.get(f"http://{HOST}:{gate.port}/connect/mail/callback?state={state}&code=x",
                        headers={"X-Signed-In-User": "lee"})
        assert r.status_code == 403 and "another user" in r.text, r.text
    finally:
        release_gate(gate)


def test_a_declined_consent_is_refused_and_audited(setup):
    gate, idp, _, _ = setup
    link = connect_link(gate, idp.user_token("erin"))
    browser = httpx.Client(timeout=HTTP_TIMEOUT_S)
    start = browser.get(link)
    state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
    r = browser.get(f"http://{HOST}:{gate.port}/connect/mail/callback?state={state}&error=access_denied")
    assert r.status_code == 403 and "declined" in r.text, r.text
    rec = records(gate, lambda r: r.get("reason") == "connect_refused")[0]
    assert rec["user"] == "erin", rec


def test_tokens_are_renewed_off_the_request_path_and_a_revoked_grant_asks_to_reconnect(setup):
    gate, idp, mail, _ = setup
    frank = idp.user_token("frank")
    browser_connects(connect_link(gate, frank), "frank")
    first = json.loads(call(gate, frank).json()["result"]["content"][0]["text"])
    before = idp.stats()["refreshes"]
    deadline = time.monotonic() + ACCESS_TTL_S * 2
    while idp.stats()["refreshes"] == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert idp.stats()["refreshes"] > before, ("the access token was renewed before it expired", first["claims"],
                                               idp.stats())
    # The renewed token is published as soon as the provider's answer is in.
    deadline = time.monotonic() + 5
    while True:
        second = json.loads(call(gate, frank).json()["result"]["content"][0]["text"])
        if second["claims"]["jti"] != first["claims"]["jti"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert second["verified"] and second["claims"]["jti"] != first["claims"]["jti"], (first, second)
    assert second["claims"]["exp"] > first["claims"]["exp"], (first, second)
    # The provider revokes frank's grant: the next renewal fails, and calls
    # ask frank to connect again.
    assert httpx.post(f"{idp.issuer}/_revoke", params={"user": "frank"}, timeout=HTTP_TIMEOUT_S).json()["revoked"] >= 1
    deadline = time.monotonic() + ACCESS_TTL_S * 2
    while time.monotonic() < deadline:
        r = call(gate, frank)
        if r.status_code == 403:
            break
        time.sleep(0.5)
    assert r.status_code == 403, r.text
    assert "expired or was revoked" in r.json()["error"]["message"], r.text
    rec = records(gate, lambda x: x.get("user") == "frank" and x.get("reason") == "user_not_connected")[0]
    assert rec["identity"]["token"] == "reconnect", rec


def test_users_and_operators_remove_connections(setup):
    gate, idp, _, admin = setup
    grace = idp.user_token("grace")
    browser_connects(connect_link(gate, grace), "grace")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    listed = httpx.get(f"{admin}/v1/connections", headers=auth, timeout=HTTP_TIMEOUT_S)
    assert listed.status_code == 200, listed.text
    mine = [c for c in listed.json()["items"] if c["user"] == "grace"]
    assert mine == [{"upstream": "mail", "user": "grace", "scope": mine[0]["scope"],
                     "connected_at": mine[0]["connected_at"], "status": "connected"}], listed.text
    # The user removes their own.
    h = {"Authorization": f"Bearer {grace}"}
    r = httpx.delete(f"http://{HOST}:{gate.port}/connect/mail", headers=h, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.json() == {"upstream": "mail", "user": "grace", "disconnected": True}, r.text
    assert call(gate, grace).status_code == 403
    rec = records(gate, lambda x: x.get("reason") == "account_disconnected")[0]
    assert (rec["user"], rec["method"]) == ("grace", "disconnect"), rec
    # An operator removes another.
    browser_connects(connect_link(gate, grace), "grace")
    assert call(gate, grace).status_code == 200
    r = httpx.delete(f"{admin}/v1/connections/mail/grace", headers=auth, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert call(gate, grace).status_code == 403
    again = httpx.delete(f"{admin}/v1/connections/mail/grace", headers=auth, timeout=HTTP_TIMEOUT_S)
    assert again.status_code == 404, again.text
    removed, refused = records(gate, lambda x: (x.get("admin") or {}).get("kind") == "connections", 2)
    assert (removed["reason"], removed["admin"]["id"], removed["admin"]["actor"]) == ("admin_change", "mail/grace", "ops")
    assert (refused["reason"], refused["status"], refused["admin"]["id"]) == ("not_found", 404, "mail/grace"), refused


def test_connections_survive_a_restart_and_no_token_leaks(setup, tmp_path):
    gate, idp, mail, admin = setup
    henry = idp.user_token("henry")
    browser_connects(connect_link(gate, henry), "henry")
    assert call(gate, henry).status_code == 200
    gate.stop()
    gate.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = call(gate, henry)
        if r.status_code == 200:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["result"]["content"][0]["text"])["sub"] == "henry"
    # Nothing a user or the provider handed toolgate is written anywhere.
    tokens = {c["assertion"].removeprefix("Bearer ") for c in mail.calls() if c["assertion"]}
    assert tokens
    store = (gate.workdir / "state").glob("**/*") if (gate.workdir / "state").exists() else []
    stored = b"".join(p.read_bytes() for p in store if p.is_file())
    audit = "\n".join(json.dumps(r) for r in gate.read_audit())
    listed = httpx.get(f"{admin}/v1/connections", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       timeout=HTTP_TIMEOUT_S).text
    metrics = httpx.get(f"{gate.base}/metrics", timeout=HTTP_TIMEOUT_S).text
    for where, text in (("audit", audit), ("stderr", gate.stderr_text()), ("admin", listed), ("metrics", metrics)):
        assert CONNECT_SECRET not in text and SEALING_KEY not in text and henry not in text, where
        for t in tokens:
            assert t.split(".")[-1] not in text, where
    for t in tokens:
        assert t.split(".")[-1].encode() not in stored, "an access token at rest"


@pytest.mark.skipif(pg_bin() is None and os.environ.get("CI") != "true",
                    reason="PostgreSQL not installed (scripts/test installs it)")
def test_on_postgresql_a_connection_made_through_one_replica_serves_the_other(tmp_path):
    """Two replicas share `[admin] backend = "postgres"`: the grant sealed by
    the replica that took the callback is read by the other, which renews
    its own access token from it; a removal through one reaches the other."""
    pg = PgCluster().start()
    idp = ExchangeIdP(tmp_path)
    mail = new_mail()
    gates: list[Gate] = []
    try:
        pwfile = tmp_path / "pg.password"
        pwfile.write_text(pg.password + "\n")
        os.chmod(pwfile, 0o600)
        agents = [Agent("support-bot", ["mail__whoami"])]
        for i in range(2):
            admin = (f'[admin]\nlisten = "{HOST}:{free_port()}"\nbackend = "postgres"\n'
                     f'postgres_url = "{pg.url()}"\npoll_interval_ms = 100\n'
                     f'[admin.postgres_password]\nfile = "{pwfile}"\n'
                     f'[[admin.tokens]]\nname = "ops"\n'
                     f'token_sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"\n')
            gate = start_gate(tmp_path / f"replica{i}", [], agents, extra_toml=accounts_toml(idp, mail.url) + admin,
                              start=False)
            at_own_port(gate)
            gates.append(gate)
        a, b = gates
        callbacks = [f"http://{HOST}:{g.port}/connect/mail/callback" for g in gates]
        idp.start([mail.url], a.port, connect={"client_id": CONNECT_CLIENT, "client_secret": CONNECT_SECRET,
                                               "redirect_uris": callbacks, "resources": [mail.url],
                                               "ttl_s": ACCESS_TTL_S})
        start_mail(mail, idp, tmp_path)
        for g in gates:
            g.start()
        ivy = idp.user_token("ivy")
        assert browser_connects(connect_link(a, ivy), "ivy").status_code == 200
        assert call(a, ivy).status_code == 200
        # B reads the store every 10 s and renews from the stored grant.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and call(b, ivy).status_code != 200:
            time.sleep(0.5)
        r = call(b, ivy)
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["result"]["content"][0]["text"])["sub"] == "ivy"
        # Removed through A: B stops using it once it reads the store again.
        r = httpx.delete(f"http://{HOST}:{a.port}/connect/mail", headers={"Authorization": f"Bearer {ivy}"},
                         timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["disconnected"] is True, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and call(b, ivy).status_code != 403:
            time.sleep(0.5)
        assert call(b, ivy).status_code == 403
    finally:
        for g in gates:
            release_gate(g)
        mail.stop()
        idp.stop()
        pg.stop()
