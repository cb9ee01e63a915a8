/**
 * Entity-group transactions without the SDK's per-call setup. `TableClient.submitTransaction` (13.3) builds a new
 * TableClient, with its whole pipeline, for every transaction and runs each operation through it only to render the
 * operation's sub-request: about 3 ms of CPU per transaction on the benchmark machine, twice what the HTTP request
 * itself costs, on every turn's commit and list-order move. This renders the body the SDK renders, byte for byte
 * apart from the two random boundary ids (test/unit/adapters/tableTransaction.test.ts compares them over generated
 * entities and keys), sends it through the client's own pipeline (authentication, retries, the per-try timeout,
 * tracing), and reads the answer as the SDK does: the same `TableTransactionResponse`, the same `RestError` (status,
 * OData error code and message) when the service refuses the transaction.
 *
 * Only for the endpoints the app uses (an account's table endpoint or Azurite, authenticated by the pipeline): a
 * client with a SAS in its URL, or a Cosmos DB table endpoint, keeps the SDK's own path.
 */
import { randomUUID } from 'node:crypto';
import {
  createHttpHeaders,
  createPipelineRequest,
  RestError,
  type HttpClient,
  type PipelineResponse,
} from '@azure/core-rest-pipeline';
import type {
  TableClient,
  TableTransactionEntityResponse,
  TableTransactionResponse,
  TransactionAction,
  UpdateMode,
} from '@azure/data-tables';

const CRLF = '\r\n';

type Transactions = Pick<TableClient, 'submitTransaction'>;
type TransactionOptions = Parameters<TableClient['submitTransaction']>[1];

/** Gives `client` the transaction path of this module (when its endpoint allows; see above); returns the client. */
export function withDirectTransactions<T extends TableClient>(
  client: T,
  httpClient: HttpClient,
  allowInsecureConnection: boolean,
): T {
  if (!directTransactionsSupported(client.url)) return client;
  const submit: Transactions['submitTransaction'] = (actions, options) =>
    submitTransaction(client, { httpClient, allowInsecureConnection }, actions, options);
  client.submitTransaction = submit;
  return client;
}

export function directTransactionsSupported(accountUrl: string): boolean {
  // The SDK moves a SAS after `$batch` and patches requests for Cosmos DB; neither is an endpoint the app uses.
  return !accountUrl.includes('?') && !/\.cosmos\.azure\.com|\.documents\.azure\.com/i.test(accountUrl);
}

export async function submitTransaction(
  client: Pick<TableClient, 'url' | 'tableName' | 'pipeline'>,
  transport: { httpClient: HttpClient; allowInsecureConnection: boolean },
  actions: TransactionAction[],
  options: TransactionOptions = {},
): Promise<TableTransactionResponse> {
  const first = actions[0];
  if (!first) throw new Error('A transaction needs at least one action.');
  const partitionKey = first[1].partitionKey;
  for (const action of actions) {
    if (action[1].partitionKey !== partitionKey) {
      throw new Error('All operations in a transaction must target the same partitionKey');
    }
  }
  const transactionId = randomUUID();
  const changesetId = randomUUID();
  const request = createPipelineRequest({
    url: `${withSlash(client.url)}$batch`,
    method: 'POST',
    body: renderTransactionBody(client.url, client.tableName, actions, transactionId, changesetId),
    headers: createHttpHeaders(transactionHeaders(transactionId)),
    ...(options.abortSignal ? { abortSignal: options.abortSignal } : {}),
    allowInsecureConnection: transport.allowInsecureConnection,
  });
  return parseTransactionResponse(await client.pipeline.sendRequest(transport.httpClient, request));
}

/** The headers of the `$batch` request, as the SDK sends them from Node. */
export function transactionHeaders(transactionId: string): Record<string, string> {
  return {
    accept: 'application/json',
    'x-ms-version': '2019-02-02',
    DataServiceVersion: '3.0;',
    MaxDataServiceVersion: '3.0;NetFx',
    'Content-Type': `multipart/mixed; boundary=batch_${transactionId}`,
    'Accept-Charset': 'UTF-8',
    Connection: 'Keep-Alive',
  };
}

/** The multipart body of one changeset holding every action, in order. */
export function renderTransactionBody(
  accountUrl: string,
  tableName: string,
  actions: readonly TransactionAction[],
  transactionId: string,
  changesetId: string,
): string {
  const tableUrl = `${withSlash(accountUrl)}${encodeURIComponent(tableName)}`;
  const parts = [
    `--batch_${transactionId}${CRLF}content-type: multipart/mixed; boundary=changeset_${changesetId}${CRLF}${CRLF}`,
  ];
  const prefix = `--changeset_${changesetId}${CRLF}content-type: application/http${CRLF}content-transfer-encoding: binary`;
  for (const action of actions) parts.push(renderSubRequest(prefix, tableUrl, action));
  return `${parts.join(CRLF)}${CRLF}--changeset_${changesetId}--${CRLF}--batch_${transactionId}--${CRLF}`;
}

function renderSubRequest(prefix: string, tableUrl: string, action: TransactionAction): string {
  const [kind, entity] = action;
  const entityUrl = `${tableUrl}(PartitionKey='${encodeURIComponent(escapeQuotes(entity.partitionKey))}',RowKey='${encodeURIComponent(escapeQuotes(entity.rowKey))}')`;
  let startLine: string;
  let headers: string[];
  let body: string | undefined;
  switch (kind) {
    case 'create':
      startLine = `POST ${tableUrl}`;
      headers = [
        'Content-Type: application/json;odata=nometadata',
        'Accept: application/json;odata=minimalmetadata',
        'DataServiceVersion: 3.0',
        'Prefer: return-no-content',
      ];
      body = JSON.stringify(serializeEntity(entity));
      break;
    case 'delete':
      // The SDK's transaction deletes unconditionally: it passes no ETag for a delete.
      startLine = `DELETE ${entityUrl}`;
      headers = ['Accept: application/json;odata=minimalmetadata', 'DataServiceVersion: 3.0', 'If-Match: *'];
      break;
    case 'update':
    case 'upsert': {
      const mode: UpdateMode = action[2] ?? 'Merge';
      startLine = `${mode === 'Merge' ? 'PATCH' : 'PUT'} ${entityUrl}`;
      headers = ['Content-Type: application/json', 'DataServiceVersion: 3.0', 'Accept: application/json'];
      if (kind === 'update') headers.push(`If-Match: ${action[3]?.etag ?? '*'}`);
      body = JSON.stringify(serializeEntity(entity));
      break;
    }
    default:
      throw new Error(`Unknown transaction action ${String(kind)}`);
  }
  const lines = [prefix, '', `${startLine} HTTP/1.1`, ...headers, CRLF];
  if (body !== undefined) lines.push(body);
  return lines.join(CRLF);
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}

function escapeQuotes(key: string): string {
  return key.replace(/'/g, "''");
}

const EDM_TYPES = new Set(['Boolean', 'DateTime', 'Double', 'Guid', 'Int32', 'Int64', 'String', 'Binary']);
const RENAMED: Readonly<Record<string, string>> = {
  partitionKey: 'PartitionKey',
  rowKey: 'RowKey',
  etag: 'odata.etag',
  timestamp: 'Timestamp',
};

/** The entity's JSON as the SDK serializes it: key names, `Edm` annotations, values. */
function serializeEntity(entity: object): Record<string, unknown> {
  const serialized: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(entity)) {
    const key = RENAMED[name] ?? name;
    const typed = value as { value?: unknown; type?: unknown } | null | undefined;
    if (typeof value === 'object' && typed?.value !== undefined && typed.type !== undefined) {
      if (typeof typed.type !== 'string' || !EDM_TYPES.has(typed.type)) {
        throw new Error(`Unknown EDM type ${typeof typed.value}`);
      }
      serialized[key] = typed.value;
      serialized[`${key}@odata.type`] = `Edm.${typed.type}`;
    } else if (
      value === undefined ||
      value === null ||
      typeof value === 'boolean' ||
      typeof value === 'string' ||
      typeof value === 'number'
    ) {
      serialized[key] = value;
    } else if (typeof value === 'bigint') {
      serialized[key] = value.toString();
      serialized[`${key}@odata.type`] = 'Edm.Int64';
    } else if (value instanceof Date) {
      serialized[key] = value;
      serialized[`${key}@odata.type`] = 'Edm.DateTime';
    } else if (value instanceof Uint8Array) {
      serialized[key] = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
      serialized[`${key}@odata.type`] = 'Edm.Binary';
    } else {
      throw new Error(`Unknown EDM type ${typeof value}`);
    }
  }
  return serialized;
}

/** Reads the `$batch` answer as the SDK's `parseTransactionResponse` does. */
export function parseTransactionResponse(response: PipelineResponse): TableTransactionResponse {
  const { status } = response;
  const rawBody = response.bodyAsText ?? '';
  if (status < 200 || status >= 300) throw transactionError(rawBody, status, response);
  // The first and last pieces are the boundaries around the sub-responses.
  const subResponses = rawBody.split('--changesetresponse_').slice(1, -1);
  const responses: TableTransactionEntityResponse[] = subResponses.map((subResponse) => {
    const statusMatch = /HTTP\/1.1 ([0-9]*)/.exec(subResponse);
    if (statusMatch?.length !== 2) throw new Error(`Couldn't extract status from sub-response:\n ${subResponse}`);
    const subStatus = Number.parseInt(statusMatch[1] ?? '', 10);
    if (!Number.isInteger(subStatus)) throw new Error(`Expected sub-response status to be an integer ${subStatus}`);
    const bodyMatch = /\{(.*)\}/.exec(subResponse);
    if (bodyMatch?.length === 2) throw transactionError(bodyMatch[0], subStatus, response);
    const etag = /ETag: (.*)/.exec(subResponse)?.[1];
    const rowKey = /RowKey='(.*)'/.exec(subResponse)?.[1];
    return { status: subStatus, ...(rowKey !== undefined ? { rowKey } : {}), ...(etag !== undefined ? { etag } : {}) };
  });
  return {
    status,
    subResponses: responses,
    getResponseForEntity: (rowKey: string) => responses.find((entry) => entry.rowKey === rowKey),
  };
}

function transactionError(bodyAsText: string, statusCode: number, response: PipelineResponse): RestError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bodyAsText);
  } catch {
    parsed = {};
  }
  let message = 'Transaction Failed';
  let code: string | undefined;
  const error = (parsed as { 'odata.error'?: { code?: unknown; message?: { value?: unknown } } } | null)?.[
    'odata.error'
  ];
  if (error) {
    if (typeof error.message?.value === 'string') message = error.message.value;
    if (typeof error.code === 'string') code = error.code;
  }
  return new RestError(message, {
    ...(code !== undefined ? { code } : {}),
    statusCode,
    request: response.request,
    response,
  });
}
