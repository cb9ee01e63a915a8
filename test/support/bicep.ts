/**
 * Reads Bicep templates offline: tree-sitter-bicep's prebuilt WebAssembly grammar, run by web-tree-sitter,
 * parses each file into a syntax tree, and the helpers below answer questions about the tree (which
 * resources, which properties, which role ids) by walking it. No Bicep compiler and no network.
 * A parse proves syntax, not types: the checks built on it cover what a compiler would not, the
 * template's security and the app's settings, plus the module wiring a typo would break.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { Language, Parser, type Node } from 'web-tree-sitter';

export interface BicepFile {
  /** Path relative to the folder it was loaded from (or a label for inline sources). */
  path: string;
  source: string;
  root: Node;
}

export interface ResourceDeclaration {
  file: BicepFile;
  symbol: string;
  /** Resource type without the API version, e.g. `Microsoft.Web/sites`. */
  type: string;
  apiVersion: string;
  existing: boolean;
  /** Deployed only when a condition holds (`= if (...) {...}`). */
  conditional: boolean;
  /** The resource's body object (inside `if` or `for` when there is one). */
  body: Node;
  node: Node;
}

let parserReady: Promise<Parser> | undefined;

/** One parser per process: loading the grammar takes a few milliseconds, parsing a template well under one. */
export function bicepParser(): Promise<Parser> {
  parserReady ??= (async () => {
    await Parser.init();
    const grammarPath = join(dirname(require.resolve('tree-sitter-bicep/package.json')), 'tree-sitter-bicep.wasm');
    const parser = new Parser();
    parser.setLanguage(await Language.load(grammarPath));
    return parser;
  })();
  return parserReady;
}

export async function parseBicep(source: string, path = '<inline>'): Promise<BicepFile> {
  const tree = (await bicepParser()).parse(source);
  if (!tree) throw new Error(`${path}: the parser returned no tree`);
  return { path, source, root: tree.rootNode };
}

/** Every `.bicep` file under `folder`, parsed, sorted by path. */
export async function loadBicepFolder(folder: string): Promise<BicepFile[]> {
  const paths = (readdirSync(folder, { recursive: true, encoding: 'utf8' }) as string[])
    .filter((path) => path.endsWith('.bicep'))
    .map((path) => join(folder, path))
    .sort();
  return Promise.all(paths.map((path) => parseBicep(readFileSync(path, 'utf8'), relative(folder, path))));
}

/** `file:line:column: ...` for the first ERROR or MISSING node, or undefined when the tree is clean. */
export function syntaxProblem(file: BicepFile): string | undefined {
  if (!file.root.hasError) return undefined;
  const stack: Node[] = [file.root];
  while (stack.length > 0) {
    const node = stack.shift() as Node;
    if (node.isError || node.isMissing) {
      const { row, column } = node.startPosition;
      const what = node.isMissing ? `missing ${node.type}` : `unexpected ${JSON.stringify(node.text.slice(0, 40))}`;
      return `${file.path}:${row + 1}:${column + 1}: ${what}`;
    }
    // Depth-first in source order, so the first problem reported is the first in the file.
    stack.unshift(...node.children);
  }
  return `${file.path}: the tree reports an error but no ERROR or MISSING node was found`;
}

const isComment = (node: Node) => node.type === 'comment' || node.type === 'diagnostic_comment';
const meaningfulChildren = (node: Node) => node.namedChildren.filter((child) => !isComment(child));

/** The text of a string literal without interpolation, with Bicep's escapes applied. */
export function stringLiteral(node: Node | undefined): string | undefined {
  if (node?.type !== 'string') return undefined;
  let text = '';
  for (const part of node.namedChildren) {
    if (part.type === 'string_content') text += part.text;
    else if (part.type === 'escape_sequence') text += unescape(part.text);
    else return undefined; // interpolation: not a constant
  }
  return text;
}

function unescape(sequence: string): string {
  const simple: Record<string, string> = {
    "\\'": "'",
    '\\\\': '\\',
    '\\n': '\n',
    '\\r': '\r',
    '\\t': '\t',
    '\\$': '$',
  };
  const unicode = /^\\u\{([0-9a-fA-F]+)\}$/.exec(sequence);
  if (unicode?.[1]) return String.fromCodePoint(Number.parseInt(unicode[1], 16));
  return simple[sequence] ?? sequence;
}

function propertyKey(property: Node): string | undefined {
  const key = meaningfulChildren(property)[0];
  if (!key) return undefined;
  return key.type === 'string' ? stringLiteral(key) : key.text;
}

/** The properties of an object literal, in order, as [key, value node]. */
export function objectEntries(object: Node): [string, Node][] {
  if (object.type !== 'object') return [];
  const entries: [string, Node][] = [];
  for (const property of object.namedChildren.filter((child) => child.type === 'object_property')) {
    const key = propertyKey(property);
    const value = meaningfulChildren(property)[1];
    if (key !== undefined && value) entries.push([key, value]);
  }
  return entries;
}

/** The value at a dotted path of object keys, e.g. `properties.siteConfig.minTlsVersion`. */
export function propertyAt(object: Node | undefined, path: string): Node | undefined {
  let current = object;
  for (const key of path.split('.')) {
    if (current?.type !== 'object') return undefined;
    current = objectEntries(current).find(([name]) => name === key)?.[1];
  }
  return current;
}

/** Top-level declarations of a kind (`parameter_declaration`, `variable_declaration`, `output_declaration`...). */
export function declarations(file: BicepFile, type: string): { name: string; node: Node; value: Node | undefined }[] {
  return file.root.namedChildren
    .filter((node) => node.type === type)
    .map((node) => {
      const [name, ...rest] = meaningfulChildren(node);
      // For params and outputs the type node sits between the name and the value.
      const value = rest.filter((child) => child.type !== 'type').at(-1);
      return { name: name?.text ?? '', node, value: value === name ? undefined : value };
    });
}

/**
 * Follows a reference to what it stands for, within one file: a variable to its value, a parameter to its
 * default, `roles.storageBlobDataOwner` to that property of the `roles` object, `(x)` to `x`.
 * Anything else (a module output, a function call) comes back as it is.
 */
export function resolve(file: BicepFile, node: Node | undefined, depth = 0): Node | undefined {
  if (!node || depth > 20) return node;
  if (node.type === 'parenthesized_expression') return resolve(file, meaningfulChildren(node)[0], depth + 1);
  if (node.type === 'identifier') {
    const declared = [
      ...declarations(file, 'variable_declaration'),
      ...declarations(file, 'parameter_declaration'),
    ].find((declaration) => declaration.name === node.text);
    return declared?.value ? resolve(file, declared.value, depth + 1) : node;
  }
  if (node.type === 'member_expression') {
    const owner = resolve(file, node.childForFieldName('object') ?? undefined, depth + 1);
    const property = node.childForFieldName('property')?.text;
    if (owner?.type === 'object' && property) return resolve(file, propertyAt(owner, property), depth + 1);
  }
  return node;
}

/** A constant after resolving references: string, number, boolean or null; undefined when not constant. */
export function constant(file: BicepFile, node: Node | undefined): string | number | boolean | null | undefined {
  const value = resolve(file, node);
  if (!value) return undefined;
  if (value.type === 'string') return stringLiteral(value);
  if (value.type === 'number') return Number(value.text);
  if (value.type === 'boolean') return value.text === 'true';
  if (value.type === 'null') return null;
  return undefined;
}

/**
 * The keys an object-valued expression can have: the keys of an object literal, of every argument of
 * `union(...)`, of both branches of a ternary, through variables. This is how app settings built as
 * `union({...}, authMode == 'jwt' ? {...} : {})` are read.
 */
export function possibleKeys(file: BicepFile, node: Node | undefined): string[] {
  const value = resolve(file, node);
  if (!value) return [];
  if (value.type === 'object') return objectEntries(value).map(([key]) => key);
  if (value.type === 'ternary_expression') {
    return [
      ...possibleKeys(file, value.childForFieldName('consequence') ?? undefined),
      ...possibleKeys(file, value.childForFieldName('alternative') ?? undefined),
    ];
  }
  if (value.type === 'call_expression' && value.childForFieldName('function')?.text === 'union') {
    return callArguments(value).flatMap((argument) => possibleKeys(file, argument));
  }
  return [];
}

export function callArguments(call: Node): Node[] {
  const args = call.childForFieldName('arguments');
  return args ? meaningfulChildren(args) : [];
}

/** The function a call expression calls, e.g. `guid`, or undefined when `node` is not a call. */
export function calledFunction(node: Node | undefined): string | undefined {
  return node?.type === 'call_expression' ? node.childForFieldName('function')?.text : undefined;
}

export function resources(file: BicepFile): ResourceDeclaration[] {
  return file.root.namedChildren
    .filter((node) => node.type === 'resource_declaration')
    .flatMap((node) => {
      const [symbol, typeString, declared] = meaningfulChildren(node);
      const [type = '', apiVersion = ''] = (stringLiteral(typeString) ?? '').split('@');
      const body = declarationBody(declared);
      if (!symbol || !body) return [];
      return [
        {
          file,
          symbol: symbol.text,
          type,
          apiVersion,
          existing: node.children.some((child) => child.type === 'existing'),
          conditional: declared?.type === 'if_statement',
          body,
          node,
        },
      ];
    });
}

/** The object of a resource or module declaration, looking inside `if (...) {...}` and `[for ...: {...}]`. */
function declarationBody(declared: Node | undefined): Node | undefined {
  if (declared?.type === 'if_statement') return declared.namedChildren.find((child) => child.type === 'object');
  if (declared?.type === 'for_statement') return declarationBody(declared.childForFieldName('body') ?? undefined);
  return declared?.type === 'object' ? declared : undefined;
}

export interface RoleGrant {
  file: string;
  symbol: string;
  /** Role definition id (a GUID) read from `roleDefinitionId`, through variables. */
  roleId: string | undefined;
  /** Resource type of the `scope:` resource. */
  scopeType: string | undefined;
  scopeSymbol: string | undefined;
  /** Source text of the principalId expression. */
  principal: string | undefined;
  /** `principalType` when it is a constant. */
  principalType: string | undefined;
  conditional: boolean;
  /** Problems with the assignment's name, which must be guid(scope.id, principalId, roleId). */
  nameProblems: string[];
}

/** Every Microsoft.Authorization/roleAssignments resource with what it grants, to whom, where. */
export function roleGrants(files: BicepFile[]): RoleGrant[] {
  return files.flatMap((file) => {
    const declared = resources(file);
    return declared
      .filter((resource) => resource.type === 'Microsoft.Authorization/roleAssignments')
      .map((resource) => {
        const scopeSymbol = propertyAt(resource.body, 'scope')?.text;
        const roleDefinition = propertyAt(resource.body, 'properties.roleDefinitionId');
        // subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <id>) or the id itself.
        const roleIdNode =
          calledFunction(roleDefinition) === 'subscriptionResourceId'
            ? callArguments(roleDefinition as Node).at(-1)
            : roleDefinition;
        const roleId = constant(file, roleIdNode);
        const principalNode = propertyAt(resource.body, 'properties.principalId');
        const principalType = constant(file, propertyAt(resource.body, 'properties.principalType'));
        return {
          file: file.path,
          symbol: resource.symbol,
          roleId: typeof roleId === 'string' ? roleId : undefined,
          scopeType: declared.find((candidate) => candidate.symbol === scopeSymbol)?.type,
          scopeSymbol,
          principal: principalNode?.text,
          principalType: typeof principalType === 'string' ? principalType : undefined,
          conditional: resource.conditional,
          nameProblems: guidNameProblems(
            file,
            propertyAt(resource.body, 'name'),
            scopeSymbol,
            principalNode,
            roleIdNode,
          ),
        };
      });
  });
}

function guidNameProblems(
  file: BicepFile,
  name: Node | undefined,
  scopeSymbol: string | undefined,
  principal: Node | undefined,
  roleId: Node | undefined,
): string[] {
  if (calledFunction(name) !== 'guid') return [`name is not guid(...): ${name?.text ?? 'missing'}`];
  const [scopeArg, principalArg, roleArg, ...extra] = callArguments(name as Node);
  const problems: string[] = [];
  if (scopeArg?.text !== `${scopeSymbol}.id`)
    problems.push(`first guid argument should be ${scopeSymbol}.id, is ${scopeArg?.text}`);
  if (principalArg?.text !== principal?.text)
    problems.push(`second guid argument should be ${principal?.text}, is ${principalArg?.text}`);
  const role = constant(file, roleArg);
  if (role === undefined || role !== constant(file, roleId))
    problems.push(`third guid argument should be the role id, is ${roleArg?.text}`);
  if (extra.length > 0) problems.push('guid has more than three arguments');
  return problems;
}

/** Names of the app settings a `Microsoft.Web/sites/config` resource named `appsettings` sets. */
export function appSettingNames(files: BicepFile[]): string[] {
  return files.flatMap((file) =>
    resources(file)
      .filter((resource) => resource.type === 'Microsoft.Web/sites/config')
      .filter((resource) => constant(file, propertyAt(resource.body, 'name')) === 'appsettings')
      .flatMap((resource) => possibleKeys(file, propertyAt(resource.body, 'properties'))),
  );
}

/**
 * What a compiler would catch in module wiring: a module path that is not among the files, a required
 * parameter not passed, a parameter passed that the module does not declare, `x.outputs.y` where module
 * `x` has no output `y`.
 */
export function moduleWiringProblems(files: BicepFile[]): string[] {
  const byPath = new Map(files.map((file) => [file.path.split('\\').join('/'), file]));
  const problems: string[] = [];
  for (const file of files) {
    const modules = new Map<string, BicepFile>();
    for (const declaration of file.root.namedChildren.filter((node) => node.type === 'module_declaration')) {
      const [symbol, pathNode, body] = meaningfulChildren(declaration);
      const modulePath = join(dirname(file.path), stringLiteral(pathNode) ?? '')
        .split('\\')
        .join('/');
      const target = byPath.get(modulePath);
      if (!symbol) continue;
      if (!target) {
        problems.push(`${file.path}: module ${symbol.text} points to ${modulePath}, which is not a loaded template`);
        continue;
      }
      modules.set(symbol.text, target);
      const passed = possibleKeys(file, propertyAt(declarationBody(body), 'params'));
      const declared = declarations(target, 'parameter_declaration');
      for (const parameter of declared) {
        if (!parameter.value && !passed.includes(parameter.name)) {
          problems.push(`${file.path}: module ${symbol.text} does not pass required parameter ${parameter.name}`);
        }
      }
      for (const name of passed) {
        if (!declared.some((parameter) => parameter.name === name)) {
          problems.push(`${file.path}: module ${symbol.text} passes ${name}, which ${target.path} does not declare`);
        }
      }
    }
    for (const node of file.root.descendantsOfType('member_expression')) {
      const owner = node?.childForFieldName('object');
      const target =
        owner?.type === 'member_expression' ? modules.get(owner.childForFieldName('object')?.text ?? '') : undefined;
      if (!node || !owner || !target || owner.childForFieldName('property')?.text !== 'outputs') continue;
      const output = node.childForFieldName('property')?.text ?? '';
      if (!declarations(target, 'output_declaration').some((declaration) => declaration.name === output)) {
        problems.push(
          `${file.path}:${node.startPosition.row + 1}: ${node.text}: ${target.path} has no output ${output}`,
        );
      }
    }
  }
  return problems;
}
