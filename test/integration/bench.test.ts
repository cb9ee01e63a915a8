/**
 * The benchmark at tiny sizes, so `npm run bench` cannot rot: the same code as the full run (Azurite, the model
 * stand-in, the app over HTTP, app processes for cold start, limits and memory), checked only for producing every
 * figure as a finite number and one parsable result line. No timing is asserted: targets are for the full run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BENCH_STEPS, runBench, selectedSteps, SIGNED_FIGURES, SMOKE_OPTIONS } from '../../bench/run';
import { parseResultLine } from '../../bench/stats';

describe('npm run bench, smoke version', () => {
  it('measures every figure and ends with one parsable name=value line', { timeout: 300_000 }, async () => {
    const result = await runBench(SMOKE_OPTIONS);

    assert.equal(result.line.includes('\n'), false, 'the result is one line');
    const parsed = parseResultLine(result.line);
    assert.deepEqual(
      Object.keys(parsed),
      result.figures.map((figure) => figure.name),
    );
    for (const name of [
      'overhead_ratio_4',
      'overhead_ratio_topped_up_4',
      'overhead_ratio_first_4',
      'overhead_ratio_6',
      'encoded_tokens_per_turn_4',
      'encoded_tokens_per_turn_6',
      'trim_speedup_6',
      'cpu_ratio',
      'cpu_ms_per_turn_app',
      'bound_ms_4',
      'added_ms_4',
      'overhead_ratio_bound_6',
      'cold_start_telemetry_o200k_ms',
      'cold_start_o200k_ms',
      'cold_start_cl100k_ms',
      'cold_start_ratio_o200k',
      'cold_start_ratio_cl100k',
      'node_empty_ms',
      'memory_peak_rss_mb',
      'rss_growth_10_20_mb',
      'stream_ttfb_added_ms',
      'overhead_ratio_limits_on_4',
      'prompt_tokens_drop_oldest',
      'cached_tokens_stable_prefix',
      'billed_prompt_ratio_stable_prefix',
      'billed_prompt_ratio_stable_prefix_summary',
      'billed_prompt_ratio_stable_prefix_equal_history',
      'history_turns_avg_drop_oldest',
      'history_tokens_avg_stable_prefix',
      'summary_calls',
      'count_ms_prose_100k',
      'count_ms_worst_100k',
      'count_worst_over_prose',
      'count_speedup_x_5k',
      'health_p99_idle_ms',
      'health_p99_busy_ms',
    ]) {
      assert.ok(name in parsed, `${name} is reported`);
    }
    for (const [name, value] of Object.entries(parsed)) {
      assert.ok(Number.isFinite(value), `${name}=${value} is a finite number`);
      if (!SIGNED_FIGURES.some((pattern) => pattern.test(name))) assert.ok(value > 0, `${name}=${value} is positive`);
    }
    for (const figure of result.figures)
      assert.ok(result.table.includes(figure.name), `${figure.name} is in the table`);
  });

  it('runs the steps --only names, in their order, and refuses an unknown one', () => {
    assert.equal(selectedSteps(['--smoke']), undefined, 'every step by default');
    assert.deepEqual(selectedSteps(['--only=limits,tokens']), ['tokens', 'limits']);
    assert.deepEqual(selectedSteps(['--cost']), ['cost']);
    assert.deepEqual(selectedSteps(['--only=memory', '--cost']), ['memory', 'cost']);
    assert.throws(() => selectedSteps(['--only=token']), /Unknown benchmark step "token"; the steps are: tokens, /);
    assert.equal(BENCH_STEPS.length, new Set(BENCH_STEPS).size);
  });

  it('refuses a result line that is not name=value pairs', () => {
    assert.deepEqual(parseResultLine('a_1=2.5 b=-3 c=1e-5'), { a_1: 2.5, b: -3, c: 1e-5 });
    assert.throws(() => parseResultLine('a=1 b=NaN'), /Not a name=value pair/);
    assert.throws(() => parseResultLine('a=1 a=2'), /appears twice/);
    assert.throws(() => parseResultLine('overhead ratio=1'), /Not a name=value pair/);
  });
});
