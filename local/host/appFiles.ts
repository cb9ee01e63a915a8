/**
 * What the local host loads and with which settings, as the Functions tooling decides it: local.settings.json
 * `Values` copied into the environment (as `func start` does) and the files package.json `main` names (as the worker
 * loads them).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Copies local.settings.json `Values` into the environment without overriding what is already set, as
 * `func start` does, so the app sees the same settings under either host.
 */
export function applyLocalSettings(settingsPath: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const settings = readSettingsFile(settingsPath);
  if (!settings) return [];
  const applied: string[] = [];
  for (const [name, value] of Object.entries(settings.Values ?? {})) {
    if (env[name] === undefined && value !== undefined && value !== null) {
      env[name] = String(value);
      applied.push(name);
    }
  }
  return applied;
}

/** Expands `{a,b}` alternatives, left to right (no nesting, as in the `main` globs the worker documents). */
function expandBraces(pattern: string): string[] {
  const found = /\{([^{}]*)\}/.exec(pattern);
  if (!found) return [pattern];
  const before = pattern.slice(0, found.index);
  const after = pattern.slice(found.index + found[0].length);
  return (found[1] ?? '').split(',').flatMap((choice) => expandBraces(`${before}${choice}${after}`));
}

function globSegment(segment: string): RegExp {
  const source = segment
    .replace(/[.+^$()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '[^/]*')
    .replace(/\?/g, '[^/]');
  return new RegExp(`^${source}$`);
}

/**
 * The files package.json `main` names, as the Functions worker loads them: a path, or a glob with `*`, `?` and
 * `{a,b}` (not `**`), relative to the app root. Brace alternatives keep their order; wildcard matches are sorted.
 */
export function appEntryFiles(appRoot: string): string[] {
  const packagePath = path.join(appRoot, 'package.json');
  if (!existsSync(packagePath)) throw new Error(`No package.json in ${appRoot}: the app's entry is its "main".`);
  const { main: pattern } = JSON.parse(readFileSync(packagePath, 'utf8')) as { main?: unknown };
  if (typeof pattern !== 'string' || pattern.trim() === '') {
    throw new Error(`${packagePath} has no "main": it names the files that register the functions.`);
  }
  if (pattern.includes('**')) throw new Error(`"main" ${pattern}: "**" is not supported by the local host.`);

  const files: string[] = [];
  for (const expanded of expandBraces(pattern)) {
    let candidates = [appRoot];
    for (const segment of expanded.split('/').filter((part) => part !== '' && part !== '.')) {
      if (!/[*?]/.test(segment)) {
        candidates = candidates.map((directory) => path.join(directory, segment));
        continue;
      }
      const matcher = globSegment(segment);
      candidates = candidates.flatMap((directory) =>
        existsSync(directory) && statSync(directory).isDirectory()
          ? readdirSync(directory)
              .filter((name) => matcher.test(name))
              .sort()
              .map((name) => path.join(directory, name))
          : [],
      );
    }
    for (const file of candidates) {
      if (existsSync(file) && statSync(file).isFile() && !files.includes(file)) files.push(file);
    }
  }
  if (files.length === 0) {
    throw new Error(`No file matches "main" (${pattern}) in ${appRoot}: run "npm run build" first.`);
  }
  return files;
}

interface LocalSettingsFile {
  Values?: Record<string, unknown>;
  Host?: Record<string, unknown>;
}

function readSettingsFile(settingsPath: string): LocalSettingsFile | undefined {
  if (!existsSync(settingsPath)) return undefined;
  try {
    return JSON.parse(readFileSync(settingsPath, 'utf8')) as LocalSettingsFile;
  } catch (error) {
    throw new Error(`${settingsPath} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}

/** local.settings.json `Host` (LocalHttpPort, CORS, CORSCredentials), which `func start` reads; undefined without one. */
export function readHostSettings(settingsPath: string): Record<string, unknown> | undefined {
  return readSettingsFile(settingsPath)?.Host;
}
