// A real OpenID Connect provider (panva/oidc-provider 8.x) for jitgate's integration tests.
//
//   node tests/oidc/provider.mjs [PORT]        (or OIDC_PORT=PORT; 0 or nothing = any free port)
//
// With OIDC_TLS_CERT and OIDC_TLS_KEY (PEM files) it serves HTTPS and its issuer is https://.
//
// Listens on 127.0.0.1 only. When listening it prints exactly one line on stdout,
// `READY <issuer>`; everything else (library notices, errors) goes to stderr.
//
// What it offers:
// - discovery, JWKS, authorization code + PKCE, device flow (RFC 8628), client credentials,
//   refresh tokens (offline_access), revocation;
// - a public native client `jitgate-cli` (loopback redirect http://127.0.0.1/callback, any
//   port as RFC 8252 allows) and a confidential client `ci-agent` (client_credentials);
// - access tokens are JWTs (RFC 9068) for the default resource `urn:jitgate:api`, audience
//   `jitgate`, with `preferred_username`, `email`, `groups` and a Keycloak-style
//   `realm_access.roles`; ID tokens (audience `jitgate-cli`) carry the same user claims;
// - its own small login + consent pages backed by a fixed user table (alice, bob);
// - signing keys: one RSA and one EC (P-256) key generated at start. User access tokens are
//   RS256, ID tokens and client-credentials tokens ES256;
// - `POST /test/rotate`: adds a new RSA and a new EC key in front of the old ones (so new
//   tokens carry new `kid`s while old tokens still verify) and answers the new JWKS `kid`s.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

// Keep stdout for the READY line only.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const HOST = '127.0.0.1';
const RESOURCE = 'urn:jitgate:api'; // resource indicators must be absolute URIs
const AUDIENCE = 'jitgate';
const MAX_BODY = 64 * 1024;

const CI_AGENT_SECRET = 'ci-agent-secret-for-tests-only-0123456789';
// Lifetime of access and ID tokens; OIDC_TOKEN_TTL=N (seconds) shortens it for tests of expiry.
const TOKEN_TTL = Number(process.env.OIDC_TOKEN_TTL ?? 300);

const USERS = new Map([
  ['u-1001', {
    username: 'alice',
    password: 'alice-password',
    name: 'Alice Example',
    email: 'alice@example.test',
    groups: ['admins', 'dbas'],
    roles: ['db-admin'],
  }],
  ['u-1002', {
    username: 'bob',
    password: 'bob-password',
    name: 'Bob Example',
    email: 'bob@example.test',
    groups: ['approvers'],
    roles: ['approver'],
  }],
]);

function userByName(username) {
  for (const [id, user] of USERS) {
    if (user.username === username) return { id, ...user };
  }
  return undefined;
}

function userClaims(user) {
  return {
    preferred_username: user.username,
    name: user.name,
    email: user.email,
    email_verified: true,
    groups: user.groups,
    realm_access: { roles: user.roles },
  };
}

// ---------------------------------------------------------------- keys

let keyCounter = 0;

function newKey(type) {
  keyCounter += 1;
  const options = type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${type}-${keyCounter}`, use: 'sig' };
}

let signingKeys = [newKey('rsa'), newKey('ec')];

// ---------------------------------------------------------------- provider

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'jitgate-cli',
        client_name: 'jitgate CLI',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: [
          'authorization_code',
          'refresh_token',
          'urn:ietf:params:oauth:grant-type:device_code',
        ],
        response_types: ['code'],
        redirect_uris: [`http://${HOST}/callback`],
        id_token_signed_response_alg: 'ES256',
      },
      {
        client_id: 'ci-agent',
        client_secret: CI_AGENT_SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: signingKeys },
    responseTypes: ['code'],
    cookies: { keys: ['jitgate-test-cookie-key-not-secret'] },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'groups', 'realm_access'],
      email: ['email', 'email_verified'],
    },
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const user = USERS.get(sub);
      if (!user) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...userClaims(user) }) };
    },
    async extraTokenClaims(ctx, token) {
      const user = token.accountId ? USERS.get(token.accountId) : undefined;
      return user ? userClaims(user) : undefined;
    },
    async issueRefreshToken(ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, resourceIndicator, client) {
          if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
          const alg = client.clientId === 'ci-agent' ? 'ES256' : 'RS256';
          return {
            scope: 'jitgate:access',
            audience: AUDIENCE,
            accessTokenTTL: TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    ttl: {
      AccessToken: TOKEN_TTL,
      AuthorizationCode: 60,
      ClientCredentials: 300,
      DeviceCode: 600,
      Grant: 3600,
      IdToken: TOKEN_TTL,
      Interaction: 600,
      RefreshToken: 3600,
      Session: 3600,
    },
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

// ---------------------------------------------------------------- interactions

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, title, body) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>`
    + `</head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`);
}

function loginPage(res, uid, error) {
  const message = error ? `<p class="error">${escapeHtml(error)}</p>` : '';
  page(res, error ? 401 : 200, 'Sign in', `${message}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
  <input type="text" name="username" autofocus>
  <input type="password" name="password">
  <button type="submit">Sign in</button>
</form>`);
}

function consentPage(res, uid, details) {
  const scopes = (details.missingOIDCScope || []).join(' ');
  page(res, 200, 'Authorize', `<p>Allow <b>${escapeHtml(details.clientId)}</b>: ${escapeHtml(scopes)}</p>
<form id="consent" method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <button type="submit">Allow</button>
</form>`);
}

async function readForm(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function showInteraction(provider, req, res) {
  const { uid, prompt, params } = await provider.interactionDetails(req, res);
  if (prompt.name === 'login') return loginPage(res, uid);
  return consentPage(res, uid, { ...prompt.details, clientId: params.client_id });
}

async function submitLogin(provider, req, res) {
  const { uid, prompt } = await provider.interactionDetails(req, res);
  if (prompt.name !== 'login') throw new errors.InvalidRequest('not a login prompt');
  const form = await readForm(req);
  const user = userByName(form.get('username') || '');
  if (!user || user.password !== form.get('password')) {
    return loginPage(res, uid, 'Invalid username or password.');
  }
  return provider.interactionFinished(req, res, { login: { accountId: user.id } }, {
    mergeWithLastSubmission: false,
  });
}

async function submitConsent(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name !== 'consent') throw new errors.InvalidRequest('not a consent prompt');
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  const consent = details.grantId ? {} : { grantId };
  return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function interaction(provider, req, res, path) {
  const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/.exec(path);
  if (!match) return page(res, 404, 'Not found', '');
  const action = match[2];
  if (!action && req.method === 'GET') return showInteraction(provider, req, res);
  if (action === 'login' && req.method === 'POST') return submitLogin(provider, req, res);
  if (action === 'confirm' && req.method === 'POST') return submitConsent(provider, req, res);
  return page(res, 405, 'Method not allowed', '');
}

// ---------------------------------------------------------------- server

let current;
let currentCallback;
let currentIssuer;

function install(issuer) {
  currentIssuer = issuer;
  current = buildProvider(issuer);
  currentCallback = current.callback();
}

function rotate(res) {
  signingKeys = [newKey('rsa'), newKey('ec'), ...signingKeys];
  install(currentIssuer);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kids: signingKeys.map((k) => k.kid) }));
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  if (!current) {
    res.writeHead(503).end();
    return;
  }
  if (path === '/test/rotate' && req.method === 'POST') {
    rotate(res);
    return;
  }
  if (path.startsWith('/interaction/')) {
    try {
      await interaction(current, req, res, path);
    } catch (err) {
      if (!res.headersSent) page(res, err.statusCode || 400, 'Interaction failed', escapeHtml(err.message));
    }
    return;
  }
  currentCallback(req, res);
}

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const TLS = process.env.OIDC_TLS_CERT && process.env.OIDC_TLS_KEY
  ? { cert: readFileSync(process.env.OIDC_TLS_CERT), key: readFileSync(process.env.OIDC_TLS_KEY) }
  : null;
const serve = (req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    if (!res.headersSent) res.writeHead(500).end();
  });
};
const server = TLS ? https.createServer(TLS, serve) : http.createServer(serve);
server.listen(port, HOST, () => {
  install(`${TLS ? 'https' : 'http'}://${HOST}:${server.address().port}`);
  process.stdout.write(`READY ${currentIssuer}\n`);
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Exit when the parent (the test session) goes away and closes our stdin.
process.stdin.on('end', stop);
process.stdin.resume();
