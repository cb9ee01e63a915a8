/**
 * A loopback stand-in for the two GitHub REST endpoints a GitHub App replying on issues uses: the app JWT (RS256,
 * verified against the app's public key, `iss` = the app id) is exchanged for an installation token at
 * `POST /app/installations/{id}/access_tokens`, and `POST /repos/{owner}/{repo}/issues/{n}/comments` accepts only
 * such a token. It records what it saw.
 */
import { generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface GithubComment {
  repository: string;
  issueNumber: number;
  body: string;
  token: string;
  installationId: number;
}

export interface GithubStandIn {
  url: string;
  appId: string;
  /** PKCS#8 PEM, as GitHub hands it out (to put in GITHUB_APP_PRIVATE_KEY). */
  privateKey: string;
  tokenExchanges: { installationId: number; token: string }[];
  comments: GithubComment[];
  /** Requests refused, with why. */
  refusals: string[];
  close(): Promise<void>;
}

export async function startGithubStandIn(appId = '12345'): Promise<GithubStandIn> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const tokens = new Map<string, number>();
  const tokenExchanges: GithubStandIn['tokenExchanges'] = [];
  const comments: GithubComment[] = [];
  const refusals: string[] = [];

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')));
  });

  function refuse(res: ServerResponse, status: number, why: string): void {
    refusals.push(why);
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ message: why }));
  }

  function handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const authorization = String(req.headers.authorization ?? '');
    const exchange = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(url.pathname);
    if (req.method === 'POST' && exchange) {
      const why = checkAppJwt(authorization.replace(/^bearer\s+/i, ''), publicKey, appId);
      if (why) return refuse(res, 401, why);
      const token = `ghs_${randomBytes(18).toString('base64url')}`;
      const installationId = Number(exchange[1]);
      tokens.set(token, installationId);
      tokenExchanges.push({ installationId, token });
      res.writeHead(201, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          token,
          expires_at: new Date(Date.now() + 3600_000).toISOString(),
          permissions: { issues: 'write' },
          repository_selection: 'all',
        }),
      );
      return;
    }
    const comment = /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/.exec(url.pathname);
    if (req.method === 'POST' && comment) {
      const token = authorization.replace(/^(token|bearer)\s+/i, '');
      const installationId = tokens.get(token);
      if (installationId === undefined)
        return refuse(res, 401, `comment without an installation token: ${authorization}`);
      const parsed = JSON.parse(body) as { body?: string };
      comments.push({
        repository: `${comment[1]}/${comment[2]}`,
        issueNumber: Number(comment[3]),
        body: parsed.body ?? '',
        token,
        installationId,
      });
      res.writeHead(201, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          id: comments.length,
          body: parsed.body,
          user: { login: 'chat-app[bot]', type: 'Bot' },
          performed_via_github_app: { id: Number(appId) },
        }),
      );
      return;
    }
    refuse(res, 404, `${req.method} ${url.pathname} is not stood in for`);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    appId,
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    tokenExchanges,
    comments,
    refusals,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Why a token is not a valid app JWT, or undefined when it is (RS256 signature, iss, iat/exp within 10 minutes). */
function checkAppJwt(jwt: string, publicKey: KeyObject, appId: string): string | undefined {
  const [header, payload, signature] = jwt.split('.');
  if (!header || !payload || !signature) return 'not a JWT';
  const parsedHeader = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg?: string };
  if (parsedHeader.alg !== 'RS256') return `alg ${parsedHeader.alg}`;
  const valid = verify(
    'RSA-SHA256',
    Buffer.from(`${header}.${payload}`),
    publicKey,
    Buffer.from(signature, 'base64url'),
  );
  if (!valid) return 'bad signature';
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as {
    iss?: unknown;
    exp?: number;
    iat?: number;
  };
  if (String(claims.iss) !== appId) return `iss ${String(claims.iss)}`;
  const now = Math.floor(Date.now() / 1000);
  if (!claims.exp || !claims.iat || claims.exp <= now || claims.exp - claims.iat > 600 + 60) return 'bad lifetime';
  return undefined;
}
