/**
 * Replies on GitHub as a GitHub App: Octokit's own `@octokit/auth-app` signs the app JWT (RS256, iss = app id) and
 * exchanges it for an installation token of the delivery's installation (cached by the library until shortly
 * before it expires); `@octokit/core` posts the comment. `GITHUB_API_URL` points both at GitHub Enterprise Server
 * or a stand-in. The comment ends with a hidden marker naming the turn, which says where a reply came from.
 * Both packages are ESM-only: loaded with import() on first use, as jose is.
 */
import type { DeliveryOutcome, ReplyEvent, ReplySender } from '../core/ports';

type OctokitModule = typeof import('@octokit/core', { with: { 'resolution-mode': 'import' } });
type AuthAppModule = typeof import('@octokit/auth-app', { with: { 'resolution-mode': 'import' } });
type Octokit = InstanceType<OctokitModule['Octokit']>;

export interface GithubAppOptions {
  appId: string;
  /** PEM (PKCS#1 or PKCS#8); `\n` escapes, as app settings often hold it, are turned into line breaks. */
  privateKey: string;
  /** https://api.github.com, https://<ghes>/api/v3, or a stand-in. */
  apiUrl: string;
}

/** GitHub refuses comments longer than 65,536 characters. */
const MAX_COMMENT_CHARS = 65_000;

export function commentMarker(turnId: string): string {
  return `<!-- chat-backend turn ${turnId} -->`;
}

export function commentBody(event: ReplyEvent): string {
  const text =
    event.type === 'turn.completed'
      ? event.reply.content
      : `Sorry, no reply could be written for this: ${event.failure.title} (\`${event.failure.code}\`).`;
  const clipped = text.length > MAX_COMMENT_CHARS ? `${text.slice(0, MAX_COMMENT_CHARS)}\n\n(reply shortened)` : text;
  return `${clipped}\n\n${commentMarker(event.job.turnId)}`;
}

export class GithubReplySender implements ReplySender {
  private modules: Promise<[OctokitModule, AuthAppModule]> | undefined;
  private readonly clients = new Map<number, Octokit>();

  constructor(private readonly options: GithubAppOptions) {}

  async deliver(event: ReplyEvent): Promise<DeliveryOutcome> {
    const target = event.job.reply;
    if (target.kind !== 'github') return { ok: false, retryable: false, error: 'not a GitHub turn' };
    const [owner, repo] = target.repository.split('/');
    if (!owner || !repo) return { ok: false, retryable: false, error: `bad repository ${target.repository}` };
    try {
      const octokit = await this.client(target.installationId);
      await octokit.request('POST /repos/{owner}/{repo}/issues/{issue_number}/comments', {
        owner,
        repo,
        issue_number: target.issueNumber,
        body: commentBody(event),
      });
      return { ok: true };
    } catch (error) {
      const status = (error as { status?: unknown }).status;
      if (typeof status !== 'number' || status === 0) {
        return { ok: false, retryable: true, error: 'GitHub could not be reached' };
      }
      // Rate limits (403/429 with a reset) and GitHub's own failures pass; a missing issue or a revoked install won't.
      const rateLimited = status === 429 || (status === 403 && /rate limit/i.test(String((error as Error).message)));
      return { ok: false, retryable: status >= 500 || rateLimited, error: `GitHub answered ${status}` };
    }
  }

  private async client(installationId: number): Promise<Octokit> {
    const existing = this.clients.get(installationId);
    if (existing) return existing;
    this.modules ??= Promise.all([import('@octokit/core'), import('@octokit/auth-app')]);
    const [{ Octokit }, { createAppAuth }] = await this.modules;
    const octokit = new Octokit({
      baseUrl: this.options.apiUrl.replace(/\/+$/, ''),
      authStrategy: createAppAuth,
      auth: {
        appId: this.options.appId,
        privateKey: this.options.privateKey.replace(/\\n/g, '\n'),
        installationId,
      },
      userAgent: 'azure-chat-backend',
    });
    this.clients.set(installationId, octokit);
    return octokit;
  }
}
