/** The README's reference parts against the code they describe, so they cannot drift apart again. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PROBLEM_CODES } from '../../src/core/errors';
import { FINISH_REASONS, finishReasonSchema } from '../../src/openapi/responseSchemas';
import { PROBLEM_CATALOG } from '../../src/openapi/problems';

const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');

describe('README', () => {
  it('names every finishReason the API can answer, as the OpenAPI description does', () => {
    const paragraph = /^`finishReason` is the model's:[^]*?\n\n/m.exec(readme)?.[0] ?? '';
    const description = finishReasonSchema.description ?? '';
    for (const reason of FINISH_REASONS) {
      assert.ok(paragraph.includes(`\`${reason}\``), `README: ${reason}`);
      assert.ok(description.includes(`\`${reason}\``), `OpenAPI description: ${reason}`);
    }
  });

  it('lists every problem code under its status in the problems table', () => {
    const table = readme.slice(readme.indexOf('### Problems'), readme.indexOf('## How a turn works'));
    for (const code of PROBLEM_CODES) {
      const status = String(PROBLEM_CATALOG[code].status);
      const row = table.split('\n').find((line) => line.startsWith('|') && line.includes(`\`${code}\``));
      assert.ok(row, `no row names ${code}`);
      assert.ok(row.split('|')[1]?.includes(status), `${code} is listed under ${row.split('|')[1]}, not ${status}`);
    }
  });
});
