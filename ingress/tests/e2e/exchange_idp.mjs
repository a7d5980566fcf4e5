// An OAuth 2.0 authorization server that exchanges tokens (RFC 8693), for
// the token-exchange tests: the certified `oidc-provider` package, with the
// token-exchange grant registered on it (the package has no built-in
// one). Tokens it issues are its own JWT access tokens, signed with its
// keys and published at its `/jwks`, one audience per RFC 8707 resource.
//
// Usage: node exchange_idp.mjs CONFIG.json
//
// CONFIG: {
//   "port": 9500, "issuer": "http://127.0.0.1:9500",
//   "jwk": {...private RSA JWK with kid...},   // the provider's signing key
//   "client_id": "toolgate", "client_secret": "...",
//   "resources": ["http://127.0.0.1:9101/mcp", ...], // audiences it issues for
//   "actor_issuer": "https://toolgate.test",        // whose actor tokens it takes
//   "actor_jwks_url": "http://127.0.0.1:8080/.well-known/jwks.json",
//   "ttl_s": 300
// }
//
// The subject token must be a JWT this provider's key signed (the user's
// login token: the tests mint it with the same key) whose `iss` is this
// issuer. An actor token, when sent, must verify against `actor_jwks_url`
// with `iss` = `actor_issuer` and `aud` = this token endpoint; its `sub`
// becomes the issued token's `act.sub`.
//
// With "connect": {"client_id", "client_secret", "redirect_uris", "resources", "ttl_s"}
// it also serves that client the authorization code flow with PKCE and
// refresh tokens (for connected accounts), with the package's development
// login and consent pages (any user name signs in); its access tokens are
// JWTs for the `resource` asked for; those for its `resources` live `ttl_s`.
//
// Out of band, for the tests: `GET /_stats` counts exchanges (and what each
// asked for, never a token); `POST /_mode?m=ok|refuse|garbage|slow|wrong_audience`
// makes the next exchanges succeed, refuse (invalid_grant), answer HTML,
// take 8 s, or issue a token for another of its resources; `POST /_revoke?user=U` revokes every grant of user U (its refresh
// tokens stop working); `GET /_stats` also counts refreshes.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, '.npm', 'node_modules');
const load = (p) => import(pathToFileURL(join(modules, p)).href);
const { default: Provider, errors } = await load('oidc-provider/lib/index.js');
// The provider's own jose when npm nested it, else the hoisted one.
const nestedJose = join('oidc-provider', 'node_modules', 'jose', 'dist', 'webapi', 'index.js');
const jose = await load(existsSync(join(modules, nestedJose)) ? nestedJose : 'jose/dist/webapi/index.js');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const tokenEndpoint = `${config.issuer}/token`;

const publicJwk = { ...config.jwk };
for (const k of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'key_ops']) delete publicJwk[k];
const subjectKeys = jose.createLocalJWKSet({ keys: [publicJwk] });
const actorKeys = config.actor_jwks_url
  ? jose.createRemoteJWKSet(new URL(config.actor_jwks_url), { cooldownDuration: 0 })
  : null;

let mode = 'ok';
const stats = { exchanges: 0, issued: 0, refused: 0, asked: [], refreshes: 0, codes: 0 };
const connect = config.connect ?? null;
const grantsOf = new Map();

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    grant_types: [GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }, ...(connect ? [{
    client_id: connect.client_id,
    client_secret: connect.client_secret,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: connect.redirect_uris,
    token_endpoint_auth_method: 'client_secret_basic',
  }] : [])],
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  pkce: { required: () => true },
  jwks: { keys: [config.jwk] },
  ttl: {
    AccessToken: (ctx, token, client) => (
      connect && client?.clientId === connect.client_id ? connect.ttl_s : config.ttl_s),
  },
  features: {
    devInteractions: { enabled: Boolean(connect) },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      getResourceServerInfo: (ctx, resource, client) => {
        if (!config.resources.includes(resource)) {
          throw new errors.InvalidTarget();
        }
        const forConnect = connect && (connect.resources ?? []).includes(resource);
        return {
          scope: 'tools',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: forConnect ? connect.ttl_s : config.ttl_s,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
      useGrantedResource: () => true,
    },
  },
  // The actor of an exchange goes into the token it issues (RFC 8693 §4.1).
  extraTokenClaims: (ctx) => (ctx.exchangeActor ? { act: ctx.exchangeActor } : undefined),
});

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

async function tokenExchange(ctx) {
  stats.exchanges += 1;
  const p = ctx.oidc.params;
  stats.asked.push({
    resource: p.resource, audience: p.audience ?? null, scope: p.scope ?? null,
    subject_token_type: p.subject_token_type, requested_token_type: p.requested_token_type ?? null,
    actor: Boolean(p.actor_token), actor_token_type: p.actor_token_type ?? null,
  });
  if (mode === 'slow') await sleep(8000);
  if (mode === 'garbage') {
    ctx.status = 200;
    ctx.type = 'text/html';
    ctx.body = '<html><body>maintenance</body></html>';
    return;
  }
  if (mode === 'refuse') {
    stats.refused += 1;
    throw new errors.InvalidGrant('subject token revoked');
  }
  if (p.subject_token_type !== ACCESS_TOKEN) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  let subject;
  try {
    ({ payload: subject } = await jose.jwtVerify(p.subject_token, subjectKeys, { issuer: config.issuer }));
  } catch (e) {
    stats.refused += 1;
    process.stdout.write(`subject token refused: ${e.code ?? e.name} ${e.message}\n`);
    throw new errors.InvalidGrant(`subject token invalid: ${e.code ?? e.name}`);
  }
  if (p.actor_token) {
    if (p.actor_token_type !== JWT || !actorKeys) {
      throw new errors.InvalidRequest('unsupported actor_token_type');
    }
    try {
      const { payload: actor } = await jose.jwtVerify(p.actor_token, actorKeys, {
        issuer: config.actor_issuer, audience: tokenEndpoint,
      });
      ctx.exchangeActor = { sub: actor.sub };
    } catch (e) {
      stats.refused += 1;
      throw new errors.InvalidGrant(`actor token invalid: ${e.code ?? e.name}`);
    }
  }
  if (!p.resource || !config.resources.includes(p.resource)) {
    throw new errors.InvalidTarget();
  }
  // `wrong_audience`: a token scoped to another of its resources.
  const resource = mode === 'wrong_audience'
    ? config.resources.find((r) => r !== p.resource) : p.resource;
  const resourceServer = new provider.ResourceServer(resource, {
    scope: 'tools',
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: config.ttl_s,
    jwt: { sign: { alg: 'RS256' } },
  });
  const token = new provider.AccessToken({
    accountId: subject.sub,
    client: ctx.oidc.client,
    gty: 'token_exchange',
    scope: 'tools',
    resourceServer,
  });
  const value = await token.save();
  stats.issued += 1;
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}

provider.registerGrantType(GRANT, tokenExchange, [
  'subject_token', 'subject_token_type', 'requested_token_type', 'resource',
  'audience', 'scope', 'actor_token', 'actor_token_type',
], ['resource', 'audience']);

provider.on('refresh_token.saved', (token) => {
  if (!grantsOf.has(token.accountId)) grantsOf.set(token.accountId, new Set());
  grantsOf.get(token.accountId).add(token.grantId);
});
provider.on('grant.success', (ctx) => {
  const gty = ctx.oidc.params?.grant_type;
  if (gty === 'refresh_token') stats.refreshes += 1;
  if (gty === 'authorization_code') stats.codes += 1;
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/_revoke' && ctx.method === 'POST') {
    const user = String(ctx.query.user ?? '');
    const grants = [...(grantsOf.get(user) ?? [])];
    for (const g of grants) {
      await provider.RefreshToken.revokeByGrantId(g);
      await provider.AccessToken.revokeByGrantId(g);
    }
    ctx.body = { user, revoked: grants.length };
    return;
  }
  if (ctx.path === '/_stats' && ctx.method === 'GET') {
    ctx.body = { ...stats, mode };
    return;
  }
  if (ctx.path === '/_mode' && ctx.method === 'POST') {
    mode = String(ctx.query.m ?? 'ok');
    ctx.body = { mode };
    return;
  }
  await next();
});

provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`exchange idp on ${config.issuer}\n`);
});
