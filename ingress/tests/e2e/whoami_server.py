"""An upstream MCP server that checks toolgate's signed end-user assertions.

Usage: python whoami_server.py PORT --jwks-url URL --issuer ISS --audience AUD
                               [--header NAME] [--encoding json|sse]

toolgate, for an upstream with ``[upstreams.identity] mode = "assertion"``,
sends a short-lived EdDSA JWT naming the end user (and the agent) in a header
on every ``tools/call``, and publishes its public keys as a JWKS. This
server is what such an upstream does with it:

* ``whoami``      -- reads the assertion header (``--header``, default
  ``Toolgate-User-Assertion``), verifies it against the JWKS at
  ``--jwks-url`` (signature, ``exp``, ``iat``, ``iss``, ``aud``) and answers
  JSON text: ``{"verified": true, "sub", "act", "agent", "tool", "customer",
  "jti", "kid", "claims", "header"}`` or ``{"verified": false, "error"}``.
  It never raises: whatever is wrong is the answer.
* ``echo(text)``  -- ``text``.

With ``--bearer`` it is an upstream behind token exchange instead: the
header (``Authorization``) carries ``Bearer <token>``, an access token the
IdP at ``--jwks-url`` issued for this upstream's ``--audience``, verified
the same way (RS256, ``exp``, ``iat``, ``iss``, ``aud``).

The JWKS is fetched when a call needs it, not at startup (toolgate may start
after this server), kept for ``JWKS_TTL_S`` and fetched again at once when a
token names a key id it does not hold (key rotation).

Every HTTP request to ``/mcp`` is remembered -- its JSON-RPC methods, tool
names, the assertion header and every header -- and ``GET /_seen`` returns
them (out of band: the test sees exactly what toolgate sent, including the
raw token, without the token passing back through toolgate).

``verify_assertion``, ``public_jwk`` and ``jwk_thumbprint`` are plain
functions the tests import as well.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import time
from typing import Any

import httpx
import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

DEFAULT_HEADER = "Toolgate-User-Assertion"
# How long a fetched JWKS is trusted before it is fetched again (a token
# with an unknown kid fetches it at once regardless).
JWKS_TTL_S = 5.0
JWKS_TIMEOUT_S = 5.0
# Clock slack for exp/iat (toolgate and this server share the host clock;
# this only absorbs whole-second rounding).
LEEWAY_S = 2
REQUIRED_CLAIMS = ["iss", "aud", "sub", "agent", "tool", "iat", "exp", "jti"]


# --------------------------------------------------------------------------
# verification helpers (also used by the tests)
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: Any) -> dict[str, str]:
    """The OKP JWK members (``kty``, ``crv``, ``x``) of an Ed25519 key
    (private or public)."""
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if hasattr(key, "public_key") else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256) of an OKP JWK: its required
    members ``crv``, ``kty``, ``x`` in lexicographic order, no whitespace."""
    required = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def jwks_kids(jwks: dict[str, Any] | None) -> list[str]:
    return [k.get("kid") for k in (jwks or {}).get("keys", []) if isinstance(k, dict)]


def verify_assertion(token: str, jwks: dict[str, Any], issuer: str, audience: str,
                     leeway: float = LEEWAY_S) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a toolgate assertion against ``jwks``: a JWS with header
    ``alg: EdDSA``, ``typ: JWT`` and a ``kid`` the JWKS holds; its signature,
    ``exp``, ``iat``, ``iss`` and ``aud``; the claims toolgate always sets
    present. Returns (header, claims); raises ``jwt.InvalidTokenError``
    (or ``jwt.PyJWKError``) saying why not."""
    header = jwt.get_unverified_header(token)
    if header.get("alg") != "EdDSA":
        raise jwt.InvalidAlgorithmError(f"alg is {header.get('alg')!r}, not 'EdDSA'")
    if header.get("typ") != "JWT":
        raise jwt.InvalidTokenError(f"typ is {header.get('typ')!r}, not 'JWT'")
    kid = header.get("kid")
    matching = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if not matching:
        raise jwt.InvalidKeyError(f"unknown kid {kid!r} (JWKS has {jwks_kids(jwks)})")
    if len(matching) > 1:
        raise jwt.InvalidKeyError(f"kid {kid!r} is in the JWKS {len(matching)} times")
    key = jwt.PyJWK(matching[0], algorithm="EdDSA").key
    claims = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options={"require": REQUIRED_CLAIMS, "verify_iat": True},
    )
    return header, claims


def verify_bearer(token: str, jwks: dict[str, Any], issuer: str, audience: str,
                  leeway: float = LEEWAY_S) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify an access token the IdP issued for this upstream (``--bearer``):
    an RS256 JWT signed by a key of the IdP's ``jwks``, with ``exp``,
    ``iat``, ``iss`` and ``aud`` (this upstream's resource). Returns
    (header, claims); raises ``jwt.InvalidTokenError`` saying why not."""
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    matching = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if len(matching) != 1:
        raise jwt.InvalidKeyError(f"kid {kid!r} is in the JWKS {len(matching)} times")
    key = jwt.PyJWK(matching[0], algorithm="RS256").key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer, leeway=leeway,
                        options={"require": ["iss", "aud", "sub", "exp", "iat", "jti"]})
    return header, claims


class JwksCache:
    """toolgate's JWKS, fetched on demand, kept briefly, fetched again for an unknown kid."""

    def __init__(self, url: str, ttl: float = JWKS_TTL_S) -> None:
        self.url = url
        self.ttl = ttl
        self.jwks: dict[str, Any] | None = None
        self.fetched_at = -math.inf
        self.fetches = 0

    async def refresh(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S) as http:
            r = await http.get(self.url)
        r.raise_for_status()
        jwks = r.json()
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError(f"not a JWKS: {r.text[:200]!r}")
        self.jwks, self.fetched_at = jwks, time.monotonic()
        self.fetches += 1
        return jwks

    async def for_kid(self, kid: str | None) -> dict[str, Any]:
        fresh = self.jwks is not None and time.monotonic() - self.fetched_at < self.ttl
        if not fresh or kid not in jwks_kids(self.jwks):
            return await self.refresh()
        assert self.jwks is not None
        return self.jwks


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------


def build(header: str, cache: JwksCache, issuer: str, audience: str, seen: list[dict[str, Any]],
          bearer: bool = False) -> MCPServer:
    server = MCPServer("whoami")

    @server.tool(description=f"Verify the {header} assertion this call carried and say whom it names.")
    async def whoami(ctx: Context) -> str:
        try:
            headers = ctx.headers
            values = list(headers.getlist(header)) if hasattr(headers, "getlist") else (
                [v for k, v in (headers or {}).items() if k.lower() == header.lower()])
            if not values:
                return json.dumps({"verified": False, "error": f"missing {header} header"})
            if len(values) > 1:
                return json.dumps({"verified": False, "error": f"{header} header sent {len(values)} times"})
            token = values[0]
            if bearer:
                if not token.startswith("Bearer "):
                    return json.dumps({"verified": False, "error": f"{header} is not a bearer token"})
                token = token[len("Bearer "):]
            kid = jwt.get_unverified_header(token).get("kid")
            jwks = await cache.for_kid(kid)
            verify = verify_bearer if bearer else verify_assertion
            head, claims = verify(token, jwks, issuer, audience)
        except Exception as e:  # noqa: BLE001 - the verdict is the answer, never an exception
            return json.dumps({"verified": False, "error": f"{type(e).__name__}: {e}"})
        return json.dumps({
            "verified": True,
            "sub": claims.get("sub"),
            "act": claims.get("act"),
            "agent": claims.get("agent"),
            "tool": claims.get("tool"),
            "customer": claims.get("customer"),
            "jti": claims.get("jti"),
            "kid": head.get("kid"),
            "claims": claims,
            "header": head,
        })

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    @server.custom_route("/_seen", methods=["GET"])
    async def seen_route(request: Request) -> JSONResponse:
        return JSONResponse({"requests": seen, "jwks_fetches": cache.fetches})

    return server


def rpc_summary(body: bytes) -> tuple[list[str], list[str]]:
    """(JSON-RPC methods, tool names of tools/call) of a request body (a
    message or a batch); empty when it is not JSON."""
    try:
        parsed = json.loads(body) if body else []
    except ValueError:
        return [], []
    messages = parsed if isinstance(parsed, list) else [parsed]
    methods, tools = [], []
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("method"), str):
            methods.append(m["method"])
            params = m.get("params")
            if m["method"] == "tools/call" and isinstance(params, dict):
                tools.append(params.get("name"))
    return methods, tools


class Recorder:
    """ASGI middleware: remembers every request to the MCP endpoint (body
    read ahead and replayed to the app unchanged)."""

    def __init__(self, app: Any, header: str, seen: list[dict[str, Any]]) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.seen = seen

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        methods, tools = rpc_summary(b"".join(chunks))
        raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        assertions = [v for k, v in scope["headers"] if k.lower() == self.header]
        self.seen.append({
            "http_method": scope["method"],
            "rpc": methods,
            "tools": tools,
            "assertion": assertions[0].decode("latin-1") if assertions else None,
            "assertion_count": len(assertions),
            "headers": dict(raw),
        })

        async def replay() -> dict:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--header", default=DEFAULT_HEADER)
    parser.add_argument("--encoding", choices=["json", "sse"], default="json")
    parser.add_argument("--bearer", action="store_true",
                        help="take `Bearer <access token>` issued by the IdP at --jwks-url (token exchange)")
    args = parser.parse_args()
    seen: list[dict[str, Any]] = []
    cache = JwksCache(args.jwks_url)
    server = build(args.header, cache, args.issuer, args.audience, seen, bearer=args.bearer)
    app = Recorder(server.streamable_http_app(json_response=(args.encoding == "json")), args.header, seen)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
