// The OAuth authorization server of the credential tests: oauth2-mock-server (npm), on a
// loopback port, made to behave like a real one in the ways the tests need: every access
// token is unique (a jti claim), a refresh token works once and only if this server issued
// it (else invalid_grant), and every call to the token endpoint is recorded for GET /_calls
// (DELETE /_calls forgets them).
//
//   node tests/mcp/oauth_server.mjs <port>     prints "listening <issuer>" when ready
import { randomUUID } from 'node:crypto';
import { OAuth2Server } from 'oauth2-mock-server';

const port = Number(process.argv[2] ?? 0);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');

const issued = new Set();
server.service.on('beforeTokenSigning', (token) => {
  token.payload.jti = randomUUID();
});
let calls = [];

server.service.on('beforeResponse', (response, req) => {
  const body = req.body ?? {};
  const basic = (req.headers.authorization ?? '').startsWith('Basic ');
  calls.push({
    grant_type: body.grant_type ?? null,
    client_auth: basic ? 'client_secret_basic' : body.client_secret ? 'client_secret_post' : 'none',
    client_id: basic
      ? Buffer.from(req.headers.authorization.slice(6), 'base64').toString().split(':')[0]
      : (body.client_id ?? null),
    code_verifier: Boolean(body.code_verifier),
    resource: body.resource ?? null,
    redirect_uri: body.redirect_uri ?? null,
  });
  if (body.grant_type === 'refresh_token') {
    if (!issued.delete(body.refresh_token)) {
      response.statusCode = 400;
      response.body = {
        error: 'invalid_grant',
        error_description: 'The refresh token is unknown, revoked or already used.',
      };
      return;
    }
  }
  if (response.statusCode === 200 && response.body.refresh_token) {
    issued.add(response.body.refresh_token);
  }
});

const app = server.service.requestHandler;
app.get('/_calls', (_req, res) => res.json(calls));
app.delete('/_calls', (_req, res) => {
  calls = [];
  res.status(204).end();
});

await server.start(port, '127.0.0.1');
// The library names itself after `localhost`; the tests reach it by address.
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(`listening ${server.issuer.url}`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => server.stop().finally(() => process.exit(0)));
}
