import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SETTINGS } from '../../src/config';

const root = join(__dirname, '..', '..');

describe('local.settings.sample.json', () => {
  it('lists every setting the app reads, and nothing else but the Functions runtime settings', () => {
    const sample = JSON.parse(readFileSync(join(root, 'local.settings.sample.json'), 'utf8'));
    const names = Object.keys(sample.Values).filter(
      (name) => !['FUNCTIONS_WORKER_RUNTIME', 'AzureWebJobsStorage'].includes(name),
    );
    assert.deepEqual(names.sort(), SETTINGS.map((setting) => setting.name).sort());
    assert.equal(sample.Values.FUNCTIONS_WORKER_RUNTIME, 'node');
  });

  it("gives each setting its local value, else the app's default, else empty (= unset)", () => {
    const sample = JSON.parse(readFileSync(join(root, 'local.settings.sample.json'), 'utf8'));
    for (const setting of SETTINGS) {
      assert.equal(sample.Values[setting.name], setting.local ?? setting.default ?? '', setting.name);
    }
  });

  it('stops queued turns before the host would: TURN_JOB_MAX_RUNS <= host.json maxDequeueCount', () => {
    const hostJson = JSON.parse(readFileSync(join(root, 'host.json'), 'utf8'));
    const sample = JSON.parse(readFileSync(join(root, 'local.settings.sample.json'), 'utf8'));
    const maxRuns = Number(SETTINGS.find((setting) => setting.name === 'TURN_JOB_MAX_RUNS')?.default);
    assert.ok(maxRuns <= hostJson.extensions.queues.maxDequeueCount);
    assert.ok(Number(sample.Values.TURN_JOB_MAX_RUNS) <= hostJson.extensions.queues.maxDequeueCount);
  });

  it('is documented setting by setting in the README configuration table', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const setting of SETTINGS) assert.match(readme, new RegExp(`^\\| \`${setting.name}\``, 'm'), setting.name);
  });

  it('points package.json main at the bundle npm run build writes, which func start, Azure and npm start load', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    assert.equal(pkg.main, 'dist/app/main.js');
    assert.match(pkg.scripts.build, /node dist\/scripts\/bundle\.js/);
  });
});
