/**
 * One way to build a TableClient for the app's tables (conversations, limits): from a connection string
 * (Azurite, or an account) or an endpoint with a managed-identity credential, with a bound on every attempt.
 */
import { TableClient, type TableServiceClientOptions } from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { createDefaultHttpClient } from '@azure/core-rest-pipeline';
import { withDirectTransactions } from './tableTransaction';

export interface TableConnection {
  /** e.g. `UseDevelopmentStorage=true` or an Azurite/account connection string. */
  connectionString?: string;
  /** `https://<account>.table.core.windows.net`, used with `credential` (managed identity). */
  endpoint?: string;
  credential?: TokenCredential;
}

export interface TableClientSettings {
  /** Each HTTP attempt is abandoned after this long (the SDK has no default). */
  tryTimeoutMs: number;
  /** SDK retries of transient failures (connection errors, 408, 429, 5xx). */
  retry: { maxRetries: number; retryDelayInMs: number; maxRetryDelayInMs: number };
}

export function createTableClient(
  tableName: string,
  connection: TableConnection,
  settings: TableClientSettings,
): TableClient {
  // One HTTP client (one connection pool) for the SDK's requests and the transactions sent beside it.
  const httpClient = createDefaultHttpClient();
  const clientOptions: TableServiceClientOptions = {
    httpClient,
    retryOptions: settings.retry,
    // Bounds every attempt: without it a storage account that accepts connections but never answers hangs the
    // request. Not the SDK's `request.timeout`, whose timer outlives a refused connection and holds the process open.
    additionalPolicies: [{ position: 'perRetry', policy: tryTimeoutPolicy(settings.tryTimeoutMs) }],
  };
  if (connection.connectionString) {
    const probe = TableClient.fromConnectionString(connection.connectionString, tableName, clientOptions);
    // Plain http only to this machine (Azurite); anything remote must use https.
    const insecure = isLoopbackHttp(probe.url);
    const client = insecure
      ? TableClient.fromConnectionString(connection.connectionString, tableName, {
          ...clientOptions,
          allowInsecureConnection: true,
        })
      : probe;
    return withDirectTransactions(client, httpClient, insecure);
  }
  if (connection.endpoint && connection.credential) {
    const insecure = isLoopbackHttp(connection.endpoint);
    const client = new TableClient(connection.endpoint, tableName, connection.credential, {
      ...clientOptions,
      allowInsecureConnection: insecure,
    });
    return withDirectTransactions(client, httpClient, insecure);
  }
  throw new Error('Table Storage needs a connectionString, or an endpoint and a credential.');
}

type PipelinePolicy = NonNullable<TableServiceClientOptions['additionalPolicies']>[number]['policy'];

/** Aborts one HTTP attempt (response body included) after `timeoutMs`; the abort surfaces as an AbortError. */
function tryTimeoutPolicy(timeoutMs: number): PipelinePolicy {
  return {
    name: 'tryTimeout',
    sendRequest: async (request, next) => {
      const outer = request.abortSignal;
      const controller = new AbortController();
      const abort = (): void => controller.abort();
      const timer = setTimeout(abort, timeoutMs);
      if (outer?.aborted) abort();
      outer?.addEventListener('abort', abort);
      request.abortSignal = controller.signal;
      try {
        return await next(request);
      } finally {
        clearTimeout(timer);
        outer?.removeEventListener('abort', abort);
        request.abortSignal = outer;
      }
    },
  };
}

function isLoopbackHttp(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname);
  } catch {
    return false;
  }
}
