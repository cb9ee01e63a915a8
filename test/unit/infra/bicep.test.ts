/**
 * Offline check of infra/: every template parses, and the parsed templates hold what the deployment
 * promises (managed identity only, no keys, Flex Consumption on Node 22, locked-down transport) and every
 * setting the app needs on Azure. The required settings come from src/config.ts, so a new required
 * setting without infra fails here.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Node } from 'web-tree-sitter';
import { REQUIRED_ON_AZURE, SETTINGS } from '../../../src/config';
import {
  appSettingNames,
  constant,
  declarations,
  loadBicepFolder,
  moduleWiringProblems,
  parseBicep,
  propertyAt,
  resources,
  roleGrants,
  syntaxProblem,
  type BicepFile,
  type ResourceDeclaration,
} from '../../support/bicep';

const repoRoot = join(__dirname, '..', '..', '..');
const infraDir = join(repoRoot, 'infra');

/** Settings the platform reads (not the app): allowed in infra without being in SETTINGS. */
const PLATFORM_SETTING = /^(AzureWebJobsStorage__|APPLICATIONINSIGHTS_|FUNCTIONS_|WEBSITE_)/;
/** Required by the app's schema when AUTH_MODE=jwt, the default mode of the templates. */
const JWT_SETTINGS = ['AUTH_ISSUER', 'AUTH_AUDIENCE', 'AUTH_JWKS_URL'];
const HOST_STORAGE_SETTINGS = [
  'AzureWebJobsStorage__credential',
  'AzureWebJobsStorage__clientId',
  'AzureWebJobsStorage__blobServiceUri',
  'AzureWebJobsStorage__queueServiceUri',
  'AzureWebJobsStorage__tableServiceUri',
];

const STORAGE = 'Microsoft.Storage/storageAccounts';
const OPENAI = 'Microsoft.CognitiveServices/accounts';
const APP_INSIGHTS = 'Microsoft.Insights/components';
const ROLES = [
  { role: 'Storage Blob Data Owner', id: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b', scope: STORAGE, forUser: true },
  { role: 'Storage Table Data Contributor', id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3', scope: STORAGE, forUser: true },
  { role: 'Storage Queue Data Contributor', id: '974c5e8b-45b9-4653-ba55-5f855dd0fb88', scope: STORAGE, forUser: true },
  { role: 'Cognitive Services OpenAI User', id: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd', scope: OPENAI, forUser: true },
  {
    role: 'Monitoring Metrics Publisher',
    id: '3913510d-42f4-4e42-8a64-420c390055eb',
    scope: APP_INSIGHTS,
    forUser: false,
  },
];

/** Settings required on Azure (from the app's schema) that no appsettings resource sets. */
function missingAppSettings(files: BicepFile[], required: readonly string[]): string[] {
  const set = new Set(appSettingNames(files));
  return required.filter((name) => !set.has(name));
}

/**
 * The grants the deployment must make: each role to the app's identity (principalType ServicePrincipal,
 * always) and the data roles to the deploying user (principalType a parameter defaulting to User, granted
 * only when a user principal is given), on a resource of the right type, named guid(scope.id, principal, role).
 */
function roleGrantProblems(files: BicepFile[]): string[] {
  const grants = roleGrants(files);
  const problems: string[] = [];
  for (const grant of grants) {
    for (const problem of grant.nameProblems) problems.push(`${grant.file} ${grant.symbol}: ${problem}`);
  }
  for (const expected of ROLES) {
    const matching = grants.filter((grant) => grant.roleId === expected.id && grant.scopeType === expected.scope);
    const toApp = matching.filter((grant) => grant.principalType === 'ServicePrincipal' && !grant.conditional);
    const toUser = matching.filter((grant) => grant.principalType === 'User' && grant.conditional);
    if (toApp.length !== 1) {
      problems.push(
        `${expected.role} (${expected.id}) on ${expected.scope} for the app identity: ${toApp.length} grants`,
      );
    }
    if (expected.forUser && toUser.length !== 1) {
      problems.push(
        `${expected.role} (${expected.id}) on ${expected.scope} for the deploying user: ${toUser.length} grants`,
      );
    }
  }
  const appPrincipals = new Set(
    grants.filter((grant) => grant.principalType === 'ServicePrincipal').map((grant) => grant.principal),
  );
  if (appPrincipals.size !== 1) {
    problems.push(`the app grants should name one principal, name ${[...appPrincipals].join(', ')}`);
  }
  return problems;
}

function only(found: ResourceDeclaration[], what: string): ResourceDeclaration {
  const deployed = found.filter((resource) => !resource.existing);
  assert.equal(
    deployed.length,
    1,
    `expected one ${what}, found ${deployed.map((resource) => resource.symbol).join(', ') || 'none'}`,
  );
  return deployed[0] as ResourceDeclaration;
}

describe('infra templates (parsed offline with tree-sitter-bicep)', () => {
  let files: BicepFile[];
  let all: ResourceDeclaration[];
  const ofType = (type: string) => all.filter((resource) => resource.type === type);
  const value = (resource: ResourceDeclaration, path: string) =>
    constant(resource.file, propertyAt(resource.body, path));

  before(async () => {
    files = await loadBicepFolder(infraDir);
    all = files.flatMap(resources);
  });

  it('finds main.bicep and its modules, and every file parses without ERROR or MISSING nodes', () => {
    const paths = files.map((file) => file.path.split('\\').join('/'));
    for (const expected of ['main.bicep', 'app/api.bicep', 'app/rbac.bicep', 'app/storage.bicep', 'app/openai.bicep']) {
      assert.ok(paths.includes(expected), `${expected} not found among ${paths.join(', ')}`);
    }
    assert.deepEqual(files.map(syntaxProblem).filter(Boolean), []);
  });

  it('wires modules the way a compiler would accept: paths, required parameters, outputs', () => {
    assert.deepEqual(moduleWiringProblems(files), []);
  });

  it('gives the function app a user-assigned managed identity and no other credential', () => {
    only(ofType('Microsoft.ManagedIdentity/userAssignedIdentities'), 'user-assigned identity');
    const site = only(ofType('Microsoft.Web/sites'), 'function app');
    assert.equal(value(site, 'identity.type'), 'UserAssigned');
    assert.equal(
      value(site, 'properties.functionAppConfig.deployment.storage.authentication.type'),
      'UserAssignedIdentity',
    );
    assert.equal(value(site, 'properties.functionAppConfig.deployment.storage.type'), 'blobContainer');
  });

  it('turns shared-key access off on the storage account and creates the deployment container and tables', () => {
    const account = only(ofType(STORAGE), 'storage account');
    assert.equal(value(account, 'properties.allowSharedKeyAccess'), false);
    assert.equal(value(account, 'properties.allowBlobPublicAccess'), false);
    assert.equal(value(account, 'properties.supportsHttpsTrafficOnly'), true);
    assert.equal(value(account, 'properties.minimumTlsVersion'), 'TLS1_2');
    only(ofType('Microsoft.Storage/storageAccounts/blobServices/containers'), 'deployment container');
    only(ofType('Microsoft.Storage/storageAccounts/tableServices/tables'), 'tables resource');
    const main = files.find((file) => file.path === 'main.bicep') as BicepFile;
    const tableNames = declarations(main, 'parameter_declaration').find((parameter) => parameter.name === 'tableNames');
    const defaults = (tableNames?.value?.namedChildren ?? []).map((item) => constant(main, item));
    assert.ok(
      defaults.includes('conversations'),
      `the conversations table is created by default (tableNames: ${defaults.join(', ')})`,
    );
  });

  it('turns local auth off on Azure OpenAI and deploys a chat model from parameters', () => {
    const account = only(ofType(OPENAI), 'Azure OpenAI account');
    assert.equal(value(account, 'kind'), 'OpenAI');
    assert.equal(value(account, 'properties.disableLocalAuth'), true);
    assert.ok(
      propertyAt(account.body, 'properties.customSubDomainName'),
      'a custom subdomain is required for Entra ID auth',
    );
    const deployment = only(ofType('Microsoft.CognitiveServices/accounts/deployments'), 'model deployment');
    for (const path of ['properties.model.name', 'properties.model.version', 'sku.name', 'sku.capacity']) {
      assert.equal(propertyAt(deployment.body, path)?.type, 'identifier', `${path} comes from a parameter`);
    }
    const main = files.find((file) => file.path === 'main.bicep') as BicepFile;
    const defaults = new Map(
      declarations(main, 'parameter_declaration').map((parameter) => [parameter.name, constant(main, parameter.value)]),
    );
    assert.equal(defaults.get('openAiModelName'), 'gpt-4o-mini');
    assert.equal(typeof defaults.get('openAiModelVersion'), 'string');
    assert.equal(typeof defaults.get('openAiCapacity'), 'number');
  });

  it('keeps Application Insights Entra-only, with the app sending telemetry as its identity', () => {
    const insights = only(ofType(APP_INSIGHTS), 'Application Insights');
    assert.equal(value(insights, 'properties.DisableLocalAuth'), true);
    only(ofType('Microsoft.OperationalInsights/workspaces'), 'Log Analytics workspace');
    const settings = only(
      ofType('Microsoft.Web/sites/config').filter((resource) => value(resource, 'name') === 'appsettings'),
      'appsettings',
    );
    const authentication = findProperty(
      propertyAt(settings.body, 'properties'),
      'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
    );
    assert.match(authentication?.text ?? '', /^'ClientId=\$\{\w+\};Authorization=AAD'$/);
  });

  it('hosts the app on Flex Consumption with Node 22, HTTPS only, TLS 1.2 and FTP off', () => {
    const plan = only(ofType('Microsoft.Web/serverfarms'), 'plan');
    assert.equal(value(plan, 'sku.name'), 'FC1');
    assert.equal(value(plan, 'sku.tier'), 'FlexConsumption');
    const site = only(ofType('Microsoft.Web/sites'), 'function app');
    assert.equal(propertyAt(site.body, 'properties.serverFarmId')?.text, `${plan.symbol}.id`);
    assert.equal(value(site, 'properties.functionAppConfig.runtime.name'), 'node');
    assert.equal(value(site, 'properties.functionAppConfig.runtime.version'), '22');
    assert.equal(value(site, 'properties.httpsOnly'), true);
    assert.equal(value(site, 'properties.siteConfig.minTlsVersion'), '1.2');
    assert.equal(value(site, 'properties.siteConfig.ftpsState'), 'Disabled');
    // Browsers: the platform's CORS, from parameters (none by default), as Host.CORS is locally.
    assert.equal(propertyAt(site.body, 'properties.siteConfig.cors.allowedOrigins')?.text, 'corsAllowedOrigins');
    assert.equal(
      propertyAt(site.body, 'properties.siteConfig.cors.supportCredentials')?.text,
      'corsSupportCredentials',
    );
    const policies = ofType('Microsoft.Web/sites/basicPublishingCredentialsPolicies');
    assert.deepEqual(policies.map((policy) => [value(policy, 'name'), value(policy, 'properties.allow')]).sort(), [
      ['ftp', false],
      ['scm', false],
    ]);
  });

  it('grants each role to the app identity and the data roles to the deploying user, named guid(scope.id, principal, role)', () => {
    assert.deepEqual(roleGrantProblems(files), []);
  });

  it('sets every setting the app requires on Azure (REQUIRED_ON_AZURE from src/config.ts), the JWT settings and host storage over identity', () => {
    assert.ok(REQUIRED_ON_AZURE.length >= 6, 'src/config.ts lists the required settings');
    assert.deepEqual(missingAppSettings(files, [...REQUIRED_ON_AZURE, ...JWT_SETTINGS, ...HOST_STORAGE_SETTINGS]), []);
    const settings = only(
      ofType('Microsoft.Web/sites/config').filter((resource) => value(resource, 'name') === 'appsettings'),
      'appsettings',
    );
    assert.equal(
      constant(settings.file, findProperty(propertyAt(settings.body, 'properties'), 'AzureWebJobsStorage__credential')),
      'managedidentity',
    );
    assert.ok(!appSettingNames(files).includes('AUTH_ALLOW_NONE'), 'infra never allows AUTH_MODE=none on Azure');
  });

  it("connects the turn queue's trigger (AzureWebJobsStorage) to the account's queue endpoint with the app identity", () => {
    // runTurnJob is triggered through the connection AzureWebJobsStorage; with identity, the host (and the app, to
    // enqueue) read __queueServiceUri, __credential and __clientId, and the identity needs Storage Queue Data
    // Contributor on the account (checked with the other roles above).
    const api = files.find((file) => file.path.endsWith(join('app', 'api.bicep')));
    assert.ok(api, 'infra/app/api.bicep');
    assert.match(api.source, /var queueEndpoint = 'https:\/\/\$\{storageAccountName\}\.queue\.\$\{storageSuffix\}'/);
    assert.match(api.source, /AzureWebJobsStorage__queueServiceUri: queueEndpoint/);
    assert.match(api.source, /AzureWebJobsStorage__clientId: identityClientId/);
    assert.ok(ROLES.some((role) => role.role === 'Storage Queue Data Contributor'));
    assert.match(
      readFileSync(join(repoRoot, 'src', 'functions', 'runTurnJob.ts'), 'utf8'),
      /connection: 'AzureWebJobsStorage'/,
    );
  });

  it('sets no app setting the app does not know (a typo would otherwise be silently ignored)', () => {
    const known = new Set(SETTINGS.map((setting) => setting.name));
    assert.deepEqual(
      appSettingNames(files).filter((name) => !known.has(name) && !PLATFORM_SETTING.test(name)),
      [],
    );
  });

  it('turns App Service Authentication on exactly in easyauth mode, answering 401 to unauthenticated callers', () => {
    const auth = only(
      ofType('Microsoft.Web/sites/config').filter((resource) => value(resource, 'name') === 'authsettingsV2'),
      'authsettingsV2',
    );
    const enabled = propertyAt(auth.body, 'properties.platform.enabled');
    assert.equal(enabled?.type, 'binary_expression');
    assert.equal(enabled?.childForFieldName('left')?.text, 'authMode');
    assert.equal(enabled?.childForFieldName('operator')?.text, '==');
    assert.equal(constant(auth.file, enabled?.childForFieldName('right') ?? undefined), 'easyauth');
    assert.equal(value(auth, 'properties.globalValidation.requireAuthentication'), true);
    assert.equal(value(auth, 'properties.globalValidation.unauthenticatedClientAction'), 'Return401');
    assert.ok(propertyAt(auth.body, 'properties.identityProviders.azureActiveDirectory.registration.clientId'));
  });

  it('outputs every value the postprovision hook writes, and the parameters file names only declared parameters', () => {
    const main = files.find((file) => file.path === 'main.bicep') as BicepFile;
    const outputs = new Set(declarations(main, 'output_declaration').map((output) => output.name));
    const mapping = JSON.parse(readFileSync(join(infraDir, 'hooks', 'local-settings-outputs.json'), 'utf8')) as {
      settings: Record<string, string>;
      remove: string[];
    };
    assert.deepEqual(
      Object.values(mapping.settings).filter((output) => !outputs.has(output)),
      [],
    );
    const known = new Set(SETTINGS.map((setting) => setting.name));
    assert.deepEqual(
      Object.keys(mapping.settings).filter((name) => !known.has(name) && !PLATFORM_SETTING.test(name)),
      [],
    );
    for (const required of REQUIRED_ON_AZURE.filter((name) => name !== 'AZURE_CLIENT_ID')) {
      assert.ok(required in mapping.settings, `${required} is written to local.settings.json`);
    }

    const parameters = new Set(declarations(main, 'parameter_declaration').map((parameter) => parameter.name));
    const parametersFile = JSON.parse(readFileSync(join(infraDir, 'main.parameters.json'), 'utf8')) as {
      parameters: object;
    };
    assert.deepEqual(
      Object.keys(parametersFile.parameters).filter((name) => !parameters.has(name)),
      [],
    );
  });

  describe('the check can fail', () => {
    it('reports the line of a syntax error', async () => {
      const broken = await parseBicep(
        [
          "param name string = 'x'",
          '',
          "resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {",
          '  name: name',
          '  properties: {',
          '    allowSharedKeyAccess: = false',
          '  }',
          '}',
        ].join('\n'),
        'broken.bicep',
      );
      assert.match(syntaxProblem(broken) ?? '', /^broken\.bicep:6:\d+: /);
      const unclosed = await parseBicep("var settings = {\n  A: 'b'\n", 'unclosed.bicep');
      assert.match(syntaxProblem(unclosed) ?? '', /^unclosed\.bicep:\d+:\d+: (missing|unexpected)/);
    });

    it('reports a required setting removed from the real api.bicep', async () => {
      const api = files.find((file) => file.path.split('\\').join('/') === 'app/api.bicep') as BicepFile;
      const settings = resources(api).find(
        (resource) => constant(api, propertyAt(resource.body, 'name')) === 'appsettings',
      );
      const entry = findPropertyNode(propertyAt(settings?.body, 'properties'), 'AZURE_OPENAI_DEPLOYMENT');
      assert.ok(entry, 'AZURE_OPENAI_DEPLOYMENT is set in api.bicep');
      const bytes = Buffer.from(api.source, 'utf8');
      const without = Buffer.concat([bytes.subarray(0, entry.startIndex), bytes.subarray(entry.endIndex)]).toString(
        'utf8',
      );
      const mutated = await parseBicep(without, api.path);
      assert.equal(syntaxProblem(mutated), undefined);
      const others = files.filter((file) => file !== api);
      assert.deepEqual(missingAppSettings([...others, mutated], REQUIRED_ON_AZURE), ['AZURE_OPENAI_DEPLOYMENT']);
      assert.deepEqual(missingAppSettings([...others, mutated], ['NOT_A_SETTING']), ['NOT_A_SETTING']);
    });

    it('reports a missing role grant and a badly named one', async () => {
      const rbac = files.find((file) => file.path.split('\\').join('/') === 'app/rbac.bicep') as BicepFile;
      const withoutTables = rbac.source
        .split('\n')
        .map((line) =>
          line.includes('roleDefinitionId') && line.includes('storageTableDataContributor')
            ? line.replace('storageTableDataContributor', 'storageQueueDataContributor')
            : line,
        )
        .join('\n');
      const problems = roleGrantProblems([await parseBicep(withoutTables, rbac.path)]);
      assert.ok(
        problems.some(
          (problem) => problem.includes('Storage Table Data Contributor') && problem.includes('app identity: 0 grants'),
        ),
        problems.join('\n'),
      );
      assert.ok(
        problems.some((problem) => problem.includes('third guid argument')),
        problems.join('\n'),
      );
    });
  });
});

describe('postprovision hook (infra/hooks/write-local-settings.mjs)', () => {
  let folder: string;
  const script = join(infraDir, 'hooks', 'write-local-settings.mjs');
  const outputs = {
    TABLES_ENDPOINT: 'https://stexample.table.core.windows.net',
    TABLES_PREFIX: '',
    AZURE_OPENAI_ENDPOINT: 'https://oai-example.openai.azure.com/',
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AUTH_MODE: 'jwt',
    AUTH_ISSUER: 'https://login.microsoftonline.com/tenant/v2.0',
    AUTH_AUDIENCE: '11111111-2222-3333-4444-555555555555',
    AUTH_JWKS_URL: 'https://login.microsoftonline.com/tenant/discovery/v2.0/keys',
    AZURE_STORAGE_BLOB_ENDPOINT: 'https://stexample.blob.core.windows.net',
    AZURE_STORAGE_QUEUE_ENDPOINT: 'https://stexample.queue.core.windows.net',
  };
  // Only PATH from this process: the hook must not pick up settings from the test's own environment.
  const run = (target: string, env: Record<string, string>) =>
    spawnSync(process.execPath, [script, target], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' });

  before(() => {
    folder = mkdtempSync(join(tmpdir(), 'local-settings-'));
  });
  after(() => rmSync(folder, { recursive: true, force: true }));

  it('merges the outputs into existing values, removing the local-only overrides', () => {
    const target = join(folder, 'merge.json');
    writeFileSync(
      target,
      JSON.stringify({
        IsEncrypted: false,
        Values: {
          AzureWebJobsStorage: 'UseDevelopmentStorage=true',
          TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
          TABLES_PREFIX: 'old',
          CHAT_MAX_TURNS: '5',
        },
        Host: { CORS: '*' },
      }),
    );
    const result = run(target, outputs);
    assert.equal(result.status, 0, result.stderr);
    const written = JSON.parse(readFileSync(target, 'utf8')) as { Values: Record<string, string>; Host: unknown };
    assert.deepEqual(written.Host, { CORS: '*' });
    assert.equal(written.Values.CHAT_MAX_TURNS, '5');
    assert.equal(written.Values.FUNCTIONS_WORKER_RUNTIME, 'node');
    assert.equal(written.Values.TABLES_ENDPOINT, outputs.TABLES_ENDPOINT);
    assert.equal(written.Values.AZURE_OPENAI_DEPLOYMENT, 'chat');
    assert.equal(written.Values.AUTH_AUDIENCE, outputs.AUTH_AUDIENCE);
    assert.equal(written.Values.AzureWebJobsStorage__tableServiceUri, outputs.TABLES_ENDPOINT);
    for (const gone of ['AzureWebJobsStorage', 'TABLES_CONNECTION_STRING', 'TABLES_PREFIX']) {
      assert.ok(!(gone in written.Values), `${gone} removed`);
    }
  });

  it('warns when jwt mode has no audience, and refuses to run without any azd outputs', () => {
    const warned = run(join(folder, 'new.json'), { ...outputs, AUTH_AUDIENCE: '' });
    assert.equal(warned.status, 0, warned.stderr);
    assert.match(warned.stderr, /AUTH_MODE=jwt without AUTH_AUDIENCE/);

    const target = join(folder, 'untouched.json');
    writeFileSync(target, '{"Values":{"A":"1"}}');
    const refused = run(target, {});
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /No azd outputs/);
    assert.equal(readFileSync(target, 'utf8'), '{"Values":{"A":"1"}}');
  });
});

/** The value node of a key inside an object-valued expression (through union(...) and ternaries). */
function findProperty(node: Node | undefined, key: string): Node | undefined {
  const property = findPropertyNode(node, key);
  return property?.namedChildren.filter((child) => child.type !== 'comment')[1];
}

/** The object_property node for `key`, searched in object literals and the arguments of calls. */
function findPropertyNode(node: Node | undefined, key: string): Node | undefined {
  if (!node) return undefined;
  for (const property of node.descendantsOfType('object_property')) {
    const name = property?.namedChildren[0];
    if (name && (name.text === key || name.text === `'${key}'`)) return property;
  }
  return undefined;
}
