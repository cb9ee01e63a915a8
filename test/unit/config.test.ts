import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, REQUIRED_ON_AZURE, SETTINGS } from '../../src/config';
import { resolveChatSettings } from '../../src/composition';

const minimal = {
  TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
  AZURE_OPENAI_ENDPOINT: 'https://example.openai.azure.com/',
  AZURE_OPENAI_DEPLOYMENT: 'chat',
};
const quiet = { info: () => {}, warn: () => {}, error: () => {} };

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies defaults and freezes the result', () => {
    const config = loadConfig(minimal);
    assert.equal(config.model.endpoint, 'https://example.openai.azure.com');
    assert.equal(config.model.modelName, 'chat', 'AZURE_OPENAI_MODEL defaults to the deployment name');
    assert.equal(config.chat.maxResponseTokens, 1024);
    assert.equal(config.chat.trimPolicy, 'drop-oldest');
    assert.equal(config.auth.mode, 'none');
    assert.ok(Object.isFrozen(config.chat));
  });

  it('reads the cost settings, and an empty optional number as unset', () => {
    const config = loadConfig({
      ...minimal,
      CHAT_TOKEN_LIMIT: '',
      CHAT_HISTORY_TOKEN_LIMIT: '16000',
      CHAT_TRIM_POLICY: 'stable-prefix',
      CHAT_SUMMARY: 'on',
    });
    assert.equal(config.chat.tokenLimit, undefined);
    assert.equal(config.chat.historyTokenLimit, 16_000);
    assert.equal(config.chat.trimLowWater, 0.6);
    assert.deepEqual(config.chat.summary, { enabled: true, maxTokens: 512 });
    assert.equal(loadConfig({ ...minimal, CHAT_HISTORY_TOKEN_LIMIT: '' }).chat.historyTokenLimit, undefined);
  });

  it('refuses summaries without stable-prefix trimming, and a low-water mark outside (0, 1]', () => {
    assert.match(
      problems({ ...minimal, CHAT_SUMMARY: 'on' }).join('\n'),
      /^CHAT_SUMMARY: on needs CHAT_TRIM_POLICY=stable-prefix/m,
    );
    assert.match(problems({ ...minimal, CHAT_TRIM_LOW_WATER: '0' }).join('\n'), /^CHAT_TRIM_LOW_WATER: /m);
    assert.match(problems({ ...minimal, CHAT_TRIM_LOW_WATER: '1.5' }).join('\n'), /^CHAT_TRIM_LOW_WATER: /m);
    assert.match(problems({ ...minimal, CHAT_HISTORY_TOKEN_LIMIT: '10' }).join('\n'), /^CHAT_HISTORY_TOKEN_LIMIT: /m);
  });

  it('reads an empty or blank value as unset, for every setting (the sample ships empty strings)', () => {
    const outcome = (env: Record<string, string>) => {
      try {
        return { config: loadConfig(env) };
      } catch (error) {
        assert.ok(error instanceof ConfigError);
        return { problems: error.problems };
      }
    };
    for (const { name } of SETTINGS) {
      const unset: Record<string, string> = { ...minimal };
      delete unset[name];
      for (const blank of ['', '  ']) {
        assert.deepEqual(outcome({ ...unset, [name]: blank }), outcome(unset), `${name}=${JSON.stringify(blank)}`);
      }
    }
  });

  it('names every bad setting', () => {
    const found = problems({
      ...minimal,
      AZURE_OPENAI_ENDPOINT: 'not a url',
      CHAT_TRIM_POLICY: 'sometimes',
      CHAT_MAX_TURNS: '-1',
      WEBHOOK_SECRET: 'plain',
    });
    for (const name of ['AZURE_OPENAI_ENDPOINT', 'CHAT_TRIM_POLICY', 'CHAT_MAX_TURNS', 'WEBHOOK_SECRET']) {
      assert.ok(
        found.some((problem) => problem.startsWith(`${name}:`)),
        `${name} missing in ${found.join(' | ')}`,
      );
    }
  });

  it('refuses an idempotency lease that could run out between two renewals, and its defaults pass', () => {
    const found = problems({
      ...minimal,
      IDEMPOTENCY_LEASE_SECONDS: '10',
      AZURE_OPENAI_TIMEOUT_MS: '15000',
      CHAT_TOOL_TIMEOUT_MS: '5000',
    }).join('\n');
    assert.match(
      found,
      /^IDEMPOTENCY_LEASE_SECONDS: must be at least 90 \(1\.5 x \(AZURE_OPENAI_TIMEOUT_MS 15000 \+ CHAT_TOOL_TIMEOUT_MS 5000\)/m,
    );
    const defaults = loadConfig(minimal);
    assert.ok(
      (defaults.chat.idempotencyLeaseMs * 2) / 3 >= defaults.model.timeoutMs + defaults.tools.timeoutMs,
      `lease ${defaults.chat.idempotencyLeaseMs} ms vs ${defaults.model.timeoutMs} ms`,
    );
    assert.equal(
      problems({ ...minimal, IDEMPOTENCY_LEASE_SECONDS: '254' }).length,
      1,
      'the default timeouts need 255 s',
    );
    assert.doesNotThrow(() => loadConfig({ ...minimal, IDEMPOTENCY_LEASE_SECONDS: '255' }));
  });

  it('requires storage, and the jwt settings in jwt mode', () => {
    assert.match(problems({ ...minimal, TABLES_CONNECTION_STRING: '' }).join('\n'), /^TABLES_CONNECTION_STRING: set/m);
    const jwt = problems({ ...minimal, AUTH_MODE: 'jwt' }).join('\n');
    for (const name of ['AUTH_JWKS_URL', 'AUTH_ISSUER', 'AUTH_AUDIENCE'])
      assert.match(jwt, new RegExp(`^${name}: required`, 'm'));
  });

  it('refuses AUTH_MODE=none on Azure unless allowed', () => {
    assert.match(
      problems({ ...minimal, WEBSITE_INSTANCE_ID: 'abc' }).join('\n'),
      /^AUTH_MODE: none is refused on Azure/m,
    );
    assert.equal(loadConfig({ ...minimal, WEBSITE_INSTANCE_ID: 'abc', AUTH_ALLOW_NONE: 'true' }).auth.mode, 'none');
  });

  it('refuses a reply reserve that fills the context window', () => {
    const config = loadConfig({ ...minimal, CHAT_TOKEN_LIMIT: '1000', CHAT_MAX_RESPONSE_TOKENS: '1000' });
    assert.throws(() => resolveChatSettings(config, quiet), /CHAT_MAX_RESPONSE_TOKENS/);
  });

  it('takes the context window from the model family unless CHAT_TOKEN_LIMIT is set', () => {
    const gpt4 = resolveChatSettings(loadConfig({ ...minimal, AZURE_OPENAI_MODEL: 'gpt-4' }), quiet);
    assert.equal(gpt4.settings.tokenLimit, 8192);
    assert.equal(gpt4.encoding, 'cl100k_base');
    const overridden = resolveChatSettings(
      loadConfig({ ...minimal, AZURE_OPENAI_MODEL: 'gpt-4', CHAT_TOKEN_LIMIT: '4000' }),
      quiet,
    );
    assert.equal(overridden.settings.tokenLimit, 4000);
  });

  it('documents every setting it reads, and the ones Azure needs', () => {
    const documented = new Set(SETTINGS.map((setting) => setting.name));
    assert.ok(documented.has('AZURE_OPENAI_MODEL'));
    for (const name of REQUIRED_ON_AZURE) assert.ok(documented.has(name));
    assert.deepEqual([...REQUIRED_ON_AZURE].sort(), [
      'AUTH_MODE',
      'AZURE_CLIENT_ID',
      'AZURE_OPENAI_DEPLOYMENT',
      'AZURE_OPENAI_ENDPOINT',
      'AZURE_OPENAI_MODEL',
      'TABLES_ENDPOINT',
    ]);
  });
});

describe('the app entry point', () => {
  it('fails at load with the name of a bad setting', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', '-e', "require('./src/index.ts')"], {
      cwd: join(__dirname, '..', '..'),
      env: { PATH: process.env.PATH ?? '', ...minimal, CHAT_TOKEN_LIMIT: '1000', CHAT_MAX_RESPONSE_TOKENS: '1000' },
      encoding: 'utf8',
    });
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /CHAT_MAX_RESPONSE_TOKENS: 1000 leaves no room/);
  });

  it('loads with good settings', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', '-e', "require('./src/index.ts')"], {
      cwd: join(__dirname, '..', '..'),
      env: { PATH: process.env.PATH ?? '', ...minimal },
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stderr);
  });
});

describe('AZURE_OPENAI_DEPLOYMENTS', () => {
  const { AZURE_OPENAI_ENDPOINT: _endpoint, AZURE_OPENAI_DEPLOYMENT: _deployment, ...storageOnly } = minimal;
  const list = (value: unknown) => ({ ...storageOnly, AZURE_OPENAI_DEPLOYMENTS: JSON.stringify(value) });

  it('reads an ordered list; names default to the deployment; the first is the primary', () => {
    const config = loadConfig(
      list([
        { endpoint: 'https://east.openai.azure.com/', deployment: 'chat', model: 'gpt-4o-mini' },
        { endpoint: 'https://west.openai.azure.com', deployment: 'chat-w', model: 'gpt-4', apiKey: 'k' },
      ]),
    );
    assert.deepEqual(config.model.deployments, [
      { name: 'chat', endpoint: 'https://east.openai.azure.com', deployment: 'chat', modelName: 'gpt-4o-mini' },
      {
        name: 'chat-w',
        endpoint: 'https://west.openai.azure.com',
        deployment: 'chat-w',
        modelName: 'gpt-4',
        apiKey: 'k',
      },
    ]);
    assert.equal(config.model.endpoint, 'https://east.openai.azure.com');
    assert.equal(config.model.modelName, 'gpt-4o-mini');
    assert.equal(config.model.attemptTimeoutMs, 60_000);
    assert.equal(config.model.failoverCooldownMs, 30_000);
  });

  it('keeps the single-deployment settings working unchanged', () => {
    const config = loadConfig({ ...minimal, AZURE_OPENAI_MODEL: 'gpt-4o' });
    assert.deepEqual(config.model.deployments, [
      { name: 'chat', endpoint: 'https://example.openai.azure.com', deployment: 'chat', modelName: 'gpt-4o' },
    ]);
  });

  it('names the setting and the entry for every kind of mistake, never echoing a key', () => {
    assert.deepEqual(problems({ ...storageOnly, AZURE_OPENAI_DEPLOYMENTS: '[{endpoint:' }), [
      'AZURE_OPENAI_DEPLOYMENTS: expected JSON: a list of {"endpoint","deployment","model"?,"name"?,"apiKey"?}',
    ]);
    assert.deepEqual(problems(list([])), ['AZURE_OPENAI_DEPLOYMENTS: the list: expected at least one deployment']);
    assert.deepEqual(problems(list([{ endpoint: 'https://a.example', deployment: 'x' }, { deployment: 'y' }])), [
      'AZURE_OPENAI_DEPLOYMENTS: [1].endpoint: expected an http(s) URL',
    ]);
    const unknown = problems(list([{ endpoint: 'https://a.example', deployment: 'x', apikey: 'sk-secret' }]));
    assert.match(unknown[0] ?? '', /^AZURE_OPENAI_DEPLOYMENTS: \[0\]: Unrecognized key/);
    assert.doesNotMatch(unknown.join(), /sk-secret/);
    assert.deepEqual(
      problems(
        list([
          { endpoint: 'https://east.example', deployment: 'chat' },
          { endpoint: 'https://west.example', deployment: 'chat' },
        ]),
      ),
      ['AZURE_OPENAI_DEPLOYMENTS: [1]: the name "chat" is taken by an earlier entry: give each a distinct "name"'],
    );
  });

  it('still requires the single settings when there is no list', () => {
    assert.deepEqual(problems(storageOnly).sort(), [
      'AZURE_OPENAI_DEPLOYMENT: required',
      'AZURE_OPENAI_ENDPOINT: expected an http(s) URL',
    ]);
  });

  it('checks the reply reserve against every deployment’s window', () => {
    const config = loadConfig(
      list([
        { endpoint: 'https://east.example', deployment: 'big', model: 'gpt-4o-mini' },
        { endpoint: 'https://west.example', deployment: 'small', model: 'gpt-4' },
      ]),
    );
    const fits = resolveChatSettings({ ...config, chat: { ...config.chat, maxResponseTokens: 8000 } }, quiet);
    assert.deepEqual(
      fits.deployments.map((deployment) => [deployment.config.name, deployment.encoding, deployment.tokenLimit]),
      [
        ['big', 'o200k_base', 128_000],
        ['small', 'cl100k_base', 8192],
      ],
    );
    assert.throws(
      () => resolveChatSettings({ ...config, chat: { ...config.chat, maxResponseTokens: 9000 } }, quiet),
      /CHAT_MAX_RESPONSE_TOKENS: 9000 leaves no room for the prompt in a 8192-token context window \(gpt-4\)/,
    );
  });
});
