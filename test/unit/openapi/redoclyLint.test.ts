/**
 * `redocly lint` (Redocly CLI, the recommended rules with the one exception redocly.yaml explains) on the document
 * the app serves, in every AUTH_MODE: any error or warning fails the test. Offline: Redocly lints local files, and
 * telemetry and the update check are off. A document with a defect planted in it proves the lint really reports.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { buildOpenApiDocument, defaultOpenApiOptions } from '../../../src/openapi/document';

const ROOT = join(__dirname, '..', '..', '..');
const directory = mkdtempSync(join(tmpdir(), 'redocly-lint-'));
after(() => rmSync(directory, { recursive: true, force: true }));

interface LintProblem {
  ruleId: string;
  severity: string;
  message: string;
  location: { pointer: string }[];
}

/** Lints the files in one run; the JSON format prints one report per file, in order. */
async function lint(files: string[]): Promise<LintProblem[][]> {
  const cli = join(ROOT, 'node_modules', '@redocly', 'cli', 'bin', 'cli.js');
  const args = [cli, 'lint', '--config', join(ROOT, 'redocly.yaml'), '--format=json', ...files];
  const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' };
  // Redocly exits 1 when it finds an error: the report is still on stdout.
  const output = await promisify(execFile)(process.execPath, args, { cwd: ROOT, env, maxBuffer: 64 << 20 }).catch(
    (error: { stdout?: string; stderr?: string }) => {
      if (!error.stdout) throw new Error(`redocly lint did not run: ${error.stderr ?? String(error)}`);
      return { stdout: error.stdout };
    },
  );
  // One pretty-printed object per file, each next one starting right after the `}` that closes the last.
  const reports = output.stdout
    .replace(/^\}\{$/gm, '}\n{')
    .split(/^(?=\{$)/m)
    .filter((part) => part.trim() !== '')
    .map((part) => JSON.parse(part) as { problems: LintProblem[] });
  assert.equal(reports.length, files.length, output.stdout.slice(0, 500));
  return reports.map((report) => report.problems);
}

const describeProblem = (problem: LintProblem) =>
  `${problem.severity} ${problem.ruleId}: ${problem.message} at ${problem.location[0]?.pointer}`;

describe('redocly lint', () => {
  it('finds nothing in the document of any AUTH_MODE, and reports a planted defect', async () => {
    const modes = ['none', 'jwt', 'easyauth'] as const;
    const files = modes.map((authMode) => {
      const file = join(directory, `openapi-${authMode}.json`);
      writeFileSync(file, JSON.stringify(buildOpenApiDocument({ ...defaultOpenApiOptions(), authMode })));
      return file;
    });
    const planted: any = buildOpenApiDocument();
    planted.components.schemas.Unused = { type: 'object' };
    delete planted.paths['/conversations'].post.operationId;
    const plantedFile = join(directory, 'openapi-planted.json');
    writeFileSync(plantedFile, JSON.stringify(planted));

    const reports = await lint([...files, plantedFile]);
    modes.forEach((mode, index) => assert.deepEqual(reports[index]!.map(describeProblem), [], `AUTH_MODE=${mode}`));
    const rules = reports[modes.length]!.map((problem) => problem.ruleId).sort();
    assert.deepEqual(rules, ['no-unused-components', 'operation-operationId']);
  });
});
