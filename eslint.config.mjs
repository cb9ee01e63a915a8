// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.azurite/**', 'coverage/**', '.bench/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    // Tests read loosely typed JSON bodies; `any` stays banned in src.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // `import { z } from 'zod'` is zod's whole namespace object: esbuild then keeps all of zod in main.js, its 40-odd
    // locales too (about 560 KB the app compiles at every cold start). `import * as z` lets it drop what is unused.
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "ImportDeclaration[source.value='zod'][importKind!='type'] > :matches(ImportSpecifier[imported.name='z'][importKind!='type'], ImportDefaultSpecifier)",
          message: "Use `import * as z from 'zod'`: the bundle then leaves out the parts of zod the app never uses.",
        },
      ],
    },
  },
  {
    // The core stays framework-free: it must not reach for Azure SDKs, the OpenAI SDK or Node HTTP.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@azure/*', 'openai', 'openai/*'],
              message: 'The core imports no @azure/* or openai: put it in an adapter.',
            },
            {
              group: ['../adapters/*', '../http/*', '../functions/*', '../../adapters/*', '../../http/*'],
              message: 'The core depends on ports, not adapters.',
            },
          ],
        },
      ],
    },
  },
);
