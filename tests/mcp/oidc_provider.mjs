// The OpenID Provider of the console's single sign-on tests: npm's oidc-provider (a certified
// OP) on a loopback port, with one confidential client and no consent screen. Its login page
// is a plain form: whoever posts `sub` and `claims` (a JSON object) to it is signed in as that
// account with those claims, so a test drives the whole flow with ordinary HTTP requests.
//
//   node tests/mcp/oidc_provider.mjs <port> <private RS256 JWK file>
//     env: OP_CLIENT_ID, OP_CLIENT_SECRET, OP_REDIRECT_URI
//   prints "listening <issuer>" when ready
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Provider } from 'oidc-provider';

const port = Number(process.argv[2]);
const signingKey = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const issuer = `http://127.0.0.1:${port}`;
const accounts = new Map(); // sub -> the claims posted with the login form

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OP_CLIENT_ID,
      client_secret: process.env.OP_CLIENT_SECRET,
      redirect_uris: [process.env.OP_REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['thinkwatch-test-op-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  async findAccount(ctx, sub) {
    const claims = accounts.get(sub);
    return claims && { accountId: sub, claims: async () => ({ ...claims, sub }) };
  },
  // The console is a first-party client: it gets every scope it asks for without a consent
  // screen (oidc-provider's documented recipe for skipping consent).
  async loadExistingGrant(ctx) {
    const { client, params, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(params.scope);
    await grant.save();
    return grant;
  },
});

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(
      `<form method="post" action="/interaction/${details.uid}/login">` +
        '<input name="sub"><textarea name="claims"></textarea><button>Sign in</button></form>',
    );
    return;
  }
  const submitted = await form(req);
  const sub = submitted.get('sub');
  if (!sub) {
    res.statusCode = 400;
    res.end('sub is required');
    return;
  }
  accounts.set(sub, JSON.parse(submitted.get('claims') || '{}'));
  await provider.interactionFinished(req, res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
const server = createServer((req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    handle(req, res);
    return;
  }
  interaction(req, res).catch((error) => {
    res.statusCode = 400;
    res.end(String(error));
  });
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => server.close(() => process.exit(0)));
}
