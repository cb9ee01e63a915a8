/**
 * The stand-in for the worker's built-in `@azure/functions-core` module. The Node.js worker provides that module
 * before it requires the app, so `app.http(...)` registrations reach it; outside a host the library runs in "test
 * mode" and drops them. Installed here, it collects each function's registration (metadata and callback, exactly
 * as the real host would receive them) and the app's hooks.
 */
import * as path from 'node:path';
import Module, { createRequire } from 'node:module';
import { app } from '@azure/functions';
import type { LogLevel } from '@azure/functions';

/** Prints a host or app log line at the worker's levels: information to `log`, warnings and errors to `logError`. */
export function printLog(
  level: LogLevel,
  line: string,
  log: (line: string) => void,
  logError: (line: string) => void,
): void {
  if (level === 'none' || level === 'trace' || level === 'debug') return;
  if (level === 'information') log(line);
  else logError(`${level}: ${line}`);
}

/** A binding as the library's `toCoreFunctionMetadata` builds it. */
export interface CoreBindingInfo {
  type?: string;
  direction?: string;
  name?: string;
  route?: string;
  methods?: string[];
  authLevel?: string;
  [property: string]: unknown;
}

export interface CoreFunctionMetadata {
  name: string;
  bindings: Record<string, CoreBindingInfo>;
  [property: string]: unknown;
}

export type CoreFunctionCallback = (...args: unknown[]) => unknown;
type CoreHookCallback = (context: Record<string, unknown>) => unknown;

export interface FunctionRegistration {
  metadata: CoreFunctionMetadata;
  handler: CoreFunctionCallback;
  /** The module we were loading when the function registered itself. */
  moduleFile: string;
}

const HOOK_NAMES = ['appStart', 'appTerminate', 'preInvocation', 'postInvocation', 'log'] as const;
export type HookName = (typeof HOOK_NAMES)[number];

export interface CoreStandIn {
  /** Set while startLocalHost requires an app module: registrations outside that window are refused, as by the worker. */
  loadingModule: string | undefined;
  /** Every module loaded through the stand-in and what it registered (modules run once per process). */
  registrationsByModule: Map<string, FunctionRegistration[]>;
  hooks: Record<HookName, CoreHookCallback[]>;
  hookRegistrationCount: number;
  programmingModel: unknown;
  /** Where the library's system logs go; the most recently started host owns it. */
  systemLog: (level: LogLevel, message: string) => void;
}

const CORE_MODULE_ID = '@azure/functions-core';
/** A path nothing on disk has: the resolver maps the module id to it and require.cache holds the stand-in there. */
const CORE_MODULE_FILENAME = path.join(path.sep, '__local-host__', 'node_modules', '@azure', 'functions-core.js');

type ResolveFilename = (request: string, ...rest: unknown[]) => string;
const moduleInternals = Module as unknown as { _resolveFilename: ResolveFilename };
const loadModule = createRequire(__filename);

let standIn: CoreStandIn | undefined;

class CoreDisposable {
  #onDispose: (() => void) | undefined;
  constructor(onDispose: () => void) {
    this.#onDispose = onDispose;
  }
  dispose(): void {
    this.#onDispose?.();
    this.#onDispose = undefined;
  }
}

/**
 * Makes `require('@azure/functions-core')` answer with the stand-in, for the rest of the process (the library
 * resolves it once and caches the answer). Idempotent.
 */
export function installFunctionsCoreStandIn(): CoreStandIn {
  if (standIn) return standIn;
  const state: CoreStandIn = {
    loadingModule: undefined,
    registrationsByModule: new Map(),
    hooks: { appStart: [], appTerminate: [], preInvocation: [], postInvocation: [], log: [] },
    hookRegistrationCount: 0,
    programmingModel: undefined,
    systemLog: (level, message) => printLog(level, message, console.log, console.error),
  };

  const coreApi = {
    version: 'local-host',
    registerFunction(metadata: CoreFunctionMetadata, handler: CoreFunctionCallback): CoreDisposable {
      const moduleFile = state.loadingModule;
      if (moduleFile === undefined) {
        throw new Error(
          `Function "${metadata.name}" registered outside app startup: register functions at module load.`,
        );
      }
      const registrations = state.registrationsByModule.get(moduleFile) ?? [];
      state.registrationsByModule.set(moduleFile, registrations);
      const registration: FunctionRegistration = { metadata, handler, moduleFile };
      registrations.push(registration);
      return new CoreDisposable(() => {
        const index = registrations.indexOf(registration);
        if (index >= 0) registrations.splice(index, 1);
      });
    },
    registerHook(hookName: string, callback: CoreHookCallback): CoreDisposable {
      if (!isHookName(hookName)) throw new RangeError(`Unrecognized hook "${hookName}".`);
      const callbacks = state.hooks[hookName];
      callbacks.push(callback);
      state.hookRegistrationCount += 1;
      return new CoreDisposable(() => {
        const index = callbacks.indexOf(callback);
        if (index >= 0) callbacks.splice(index, 1);
      });
    },
    setProgrammingModel(programmingModel: unknown): void {
      state.programmingModel = programmingModel;
    },
    getProgrammingModel(): unknown {
      return state.programmingModel;
    },
    /** Present since host 4.28: `app.setup({ enableHttpStream: true })` checks for it. */
    log(level: LogLevel, _category: string, message: string): void {
      state.systemLog(level, message);
    },
    Disposable: CoreDisposable,
  };

  const resolveFilename = moduleInternals._resolveFilename;
  moduleInternals._resolveFilename = function resolveWithStandIn(this: unknown, request: string, ...rest: unknown[]) {
    return request === CORE_MODULE_ID ? CORE_MODULE_FILENAME : resolveFilename.call(this, request, ...rest);
  };
  const coreModule = new Module(CORE_MODULE_FILENAME);
  coreModule.filename = CORE_MODULE_FILENAME;
  coreModule.exports = coreApi;
  coreModule.loaded = true;
  loadModule.cache[CORE_MODULE_FILENAME] = coreModule;

  standIn = state;
  return state;
}

function isHookName(name: string): name is HookName {
  return (HOOK_NAMES as readonly string[]).includes(name);
}

/** The library looks for the host once per process; if it already settled on test mode, nothing would register. */
function assertLibraryUsesStandIn(state: CoreStandIn): void {
  const before = state.hookRegistrationCount;
  const probe = app.hook.appStart(() => undefined);
  probe.dispose();
  if (state.hookRegistrationCount === before) {
    throw new Error(
      '@azure/functions already switched to test mode in this process (something called app.* before the local host ' +
        'started), so it would drop every registration. Start the local host before loading any function module.',
    );
  }
}

/**
 * Requires the setup module, then every function module, with the stand-in in place, and returns what they
 * registered. A module already loaded through the stand-in is not run again: its earlier registrations are reused.
 */
export function collectRegistrations(options: {
  functionModules: string[];
  setupModule?: string;
}): FunctionRegistration[] {
  const state = installFunctionsCoreStandIn();
  assertLibraryUsesStandIn(state);

  const modules = [options.setupModule, ...options.functionModules].filter((file): file is string => !!file);
  const registrations: FunctionRegistration[] = [];
  for (const file of modules) {
    const resolved = loadModule.resolve(path.resolve(file));
    if (!state.registrationsByModule.has(resolved)) {
      if (loadModule.cache[resolved]) {
        throw new Error(
          `${file} was loaded before the local host started, so its registrations were dropped (test mode).`,
        );
      }
      loadThroughStandIn(state, resolved);
    }
    registrations.push(...(state.registrationsByModule.get(resolved) ?? []));
  }

  const seen = new Set<string>();
  for (const { metadata } of registrations) {
    const key = metadata.name.toLowerCase();
    if (seen.has(key)) throw new Error(`Two functions are named "${metadata.name}": function names must be unique.`);
    seen.add(key);
  }
  return registrations;
}

function loadThroughStandIn(state: CoreStandIn, resolved: string): void {
  const cachedBefore = new Set(Object.keys(loadModule.cache));
  state.registrationsByModule.set(resolved, []);
  state.loadingModule = resolved;
  try {
    loadModule(resolved);
  } catch (error) {
    state.registrationsByModule.delete(resolved);
    throw error;
  } finally {
    state.loadingModule = undefined;
  }
  // Modules it pulled in registered under it; mark them so loading them by name later does not count them twice.
  for (const file of Object.keys(loadModule.cache)) {
    if (!cachedBefore.has(file) && !state.registrationsByModule.has(file)) state.registrationsByModule.set(file, []);
  }
}
