import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  createHttpHeaders,
  type HttpClient,
  type PipelineRequest,
  type PipelineResponse,
} from '@azure/core-rest-pipeline';
import { AzureNamedKeyCredential, TableClient, type TransactionAction } from '@azure/data-tables';
import { directTransactionsSupported, withDirectTransactions } from '../../../src/adapters/tableTransaction';

const ACCOUNT_URL = 'http://127.0.0.1:10002/devstoreaccount1';
const CREDENTIAL = new AzureNamedKeyCredential(
  'devstoreaccount1',
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==',
);

/** An HTTP client that answers every request with `answer` and keeps what was sent. */
function recordingHttpClient(answer: (request: PipelineRequest) => Omit<PipelineResponse, 'request'>) {
  const sent: PipelineRequest[] = [];
  const httpClient: HttpClient = {
    sendRequest: async (request) => {
      sent.push(request);
      return { request, ...answer(request) };
    },
  };
  return { httpClient, sent };
}

/** A `$batch` answer of `count` successful sub-responses, the shape Azurite and the service give. */
function successAnswer(request: PipelineRequest, count: number): Omit<PipelineResponse, 'request'> {
  const batch = /boundary=batch_([0-9a-f-]+)/.exec(String(request.headers.get('content-type')))?.[1] ?? '';
  const changeset = /boundary=changeset_([0-9a-f-]+)/.exec(String(request.body))?.[1] ?? '';
  const parts = Array.from(
    { length: count },
    (_, index) =>
      `--changesetresponse_${changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n` +
      `HTTP/1.1 204 No Content\r\nDataServiceVersion: 3.0;\r\n` +
      `Location: ${ACCOUNT_URL}/t(PartitionKey='p',RowKey='r${index}')\r\n` +
      `ETag: W/"datetime'2026-11-28T19%3A18%3A49.89${index}Z'"\r\n\r\n\r\n`,
  );
  return {
    status: 202,
    headers: createHttpHeaders({ 'content-type': `multipart/mixed; boundary=batchresponse_${batch}` }),
    bodyAsText:
      `--batchresponse_${batch}\r\nContent-Type: multipart/mixed; boundary=changesetresponse_${changeset}\r\n\r\n` +
      `${parts.join('')}--changesetresponse_${changeset}--\r\n--batchresponse_${batch}--\r\n`,
  };
}

function failureAnswer(status: number, code: string, index: number): Omit<PipelineResponse, 'request'> {
  const error = JSON.stringify({
    'odata.error': { code, message: { lang: 'en-US', value: `${index}:Refused.\nRequestId:x\nTime:2026-11-28` } },
  });
  return {
    status: 202,
    headers: createHttpHeaders({ 'content-type': 'multipart/mixed; boundary=batchresponse_b' }),
    bodyAsText:
      `--batchresponse_b\r\nContent-Type: multipart/mixed; boundary=changesetresponse_c\r\n\r\n` +
      `--changesetresponse_c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n` +
      `HTTP/1.1 ${status} Refused\r\nContent-ID: ${index + 1}\r\nDataServiceVersion: 3.0;\r\n` +
      `Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n${error}\r\n` +
      `--changesetresponse_c--\r\n--batchresponse_b--\r\n`,
  };
}

/** The SDK's client and ours over the same recording HTTP client. */
function clients(answer: (request: PipelineRequest) => Omit<PipelineResponse, 'request'>) {
  const recorder = recordingHttpClient(answer);
  const options = { allowInsecureConnection: true, httpClient: recorder.httpClient, retryOptions: { maxRetries: 0 } };
  const sdk = new TableClient(ACCOUNT_URL, 'conversations', CREDENTIAL, options);
  const direct = withDirectTransactions(
    new TableClient(ACCOUNT_URL, 'conversations', CREDENTIAL, options),
    recorder.httpClient,
    true,
  );
  return { sdk, direct, sent: recorder.sent };
}

/** The request without what differs on every request: boundary ids, request id, date, signature. */
function comparable(request: PipelineRequest) {
  const ids = new Map<string, string>();
  const normalize = (text: string) =>
    text.replace(/(batch|changeset)_[0-9a-f-]{36}/g, (_match, kind: string) => {
      const id = `${kind}_${ids.size}`;
      return ids.get(_match) ?? (ids.set(_match, id), id);
    });
  const headers = Object.fromEntries(
    [...request.headers]
      .filter(([name]) => !['x-ms-client-request-id', 'x-ms-date', 'authorization'].includes(name))
      .map(([name, value]) => [name, normalize(value)]),
  );
  return { method: request.method, url: request.url, headers, body: normalize(String(request.body)) };
}

const keyText = fc.string({
  unit: fc.oneof(
    fc.constantFrom("'", "''", '|', '%', ' ', ':', '+', '&', '=', '(', ')', ',', 'é', '中', '😀', '\u200d', '~', '*'),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
  ),
  minLength: 1,
  maxLength: 12,
});
const propertyValue = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.date({ noInvalidDate: true }),
  fc.uint8Array({ maxLength: 12 }),
  fc.record({ value: fc.integer().map(String), type: fc.constantFrom('Int64', 'Int32', 'Double', 'String') }),
);
const entity = fc.record({
  partitionKey: fc.constant('p'),
  rowKey: keyText,
  properties: fc.dictionary(fc.stringMatching(/^[A-Za-z][A-Za-z0-9]{0,8}$/), propertyValue, { maxKeys: 4 }),
});
const etag = fc.constantFrom(`W/"datetime'2026-11-28T19%3A18%3A49.8787286Z'"`, '*');
const action: fc.Arbitrary<TransactionAction> = fc.oneof(
  entity.map(({ properties, ...keys }): TransactionAction => ['create', { ...keys, ...properties }]),
  entity.map(({ properties: _unused, ...keys }): TransactionAction => ['delete', keys]),
  fc
    .tuple(entity, fc.constantFrom('Merge' as const, 'Replace' as const), fc.option(etag, { nil: undefined }))
    .map(([{ properties, ...keys }, mode, tag]): TransactionAction =>
      tag === undefined
        ? ['update', { ...keys, ...properties }, mode]
        : ['update', { ...keys, ...properties }, mode, { etag: tag }],
    ),
  fc
    .tuple(entity, fc.constantFrom('Merge' as const, 'Replace' as const))
    .map(([{ properties, ...keys }, mode]): TransactionAction => ['upsert', { ...keys, ...properties }, mode]),
);

describe('transactions sent directly', () => {
  test('send the request the SDK sends, for any actions, keys and property types', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(action, { minLength: 1, maxLength: 5 }),
        fc.constantFrom('p', "o'brien|2", 'u|abc:d%e'),
        async (actions, partitionKey) => {
          const inPartition = actions.map(
            ([kind, target, ...rest]) => [kind, { ...target, partitionKey }, ...rest] as unknown as TransactionAction,
          );
          const { sdk, direct, sent } = clients((request) => successAnswer(request, inPartition.length));
          const fromSdk = await sdk.submitTransaction(inPartition);
          const fromDirect = await direct.submitTransaction(inPartition);
          assert.equal(sent.length, 2);
          assert.deepEqual(comparable(sent[1]!), comparable(sent[0]!));
          assert.deepEqual(fromDirect.subResponses, fromSdk.subResponses);
          assert.equal(fromDirect.status, fromSdk.status);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('a refused transaction fails with the RestError the SDK throws', async () => {
    for (const [status, code] of [
      [412, 'UpdateConditionNotSatisfied'],
      [409, 'EntityAlreadyExists'],
      [404, 'ResourceNotFound'],
    ] as const) {
      const { sdk, direct } = clients(() => failureAnswer(status, code, 1));
      const actions: TransactionAction[] = [
        ['create', { partitionKey: 'p', rowKey: 'a' }],
        ['update', { partitionKey: 'p', rowKey: 'h', n: 1 }, 'Merge', { etag: 'W/"x"' }],
      ];
      const fromSdk = await sdk.submitTransaction(actions).catch((error: unknown) => error);
      const fromDirect = await direct.submitTransaction(actions).catch((error: unknown) => error);
      const shape = (error: unknown) => {
        const { name, message, statusCode, code } = error as Record<string, unknown>;
        return { name, message, statusCode, code };
      };
      assert.deepEqual(shape(fromDirect), shape(fromSdk));
      assert.equal(shape(fromDirect).statusCode, status);
      assert.equal(shape(fromDirect).code, code);
    }
  });

  test('a batch the service refuses whole (no sub-response) fails like the SDK', async () => {
    const { sdk, direct } = clients(() => ({
      status: 400,
      headers: createHttpHeaders({ 'content-type': 'application/json' }),
      bodyAsText: JSON.stringify({ 'odata.error': { code: 'InvalidInput', message: { value: 'Bad batch.' } } }),
    }));
    const actions: TransactionAction[] = [['delete', { partitionKey: 'p', rowKey: 'a' }]];
    const fromSdk = (await sdk.submitTransaction(actions).catch((error: unknown) => error)) as Record<string, unknown>;
    const fromDirect = (await direct.submitTransaction(actions).catch((error: unknown) => error)) as Record<
      string,
      unknown
    >;
    assert.equal(fromDirect.statusCode, 400);
    assert.deepEqual(
      [fromDirect.name, fromDirect.message, fromDirect.statusCode, fromDirect.code],
      [fromSdk.name, fromSdk.message, fromSdk.statusCode, fromSdk.code],
    );
  });

  test('actions in more than one partition are refused before anything is sent', async () => {
    const { direct, sent } = clients((request) => successAnswer(request, 2));
    await assert.rejects(
      direct.submitTransaction([
        ['create', { partitionKey: 'p', rowKey: 'a' }],
        ['create', { partitionKey: 'q', rowKey: 'b' }],
      ]),
      /same partitionKey/,
    );
    assert.equal(sent.length, 0);
  });

  test('a SAS in the URL or a Cosmos DB endpoint keeps the SDK path', () => {
    assert.equal(directTransactionsSupported(ACCOUNT_URL), true);
    assert.equal(directTransactionsSupported('https://acct.table.core.windows.net'), true);
    assert.equal(directTransactionsSupported('https://acct.table.core.windows.net?sv=2020&sig=x'), false);
    assert.equal(directTransactionsSupported('https://acct.table.cosmos.azure.com'), false);
  });
});
