// Lint rules of the house (run by `npm run lint`, part of `npm test`). Line length 120;
// no unused code; the usual correctness rules. Import cycles are checked by
// test/unit/importLayers.test.ts. Every file keeps the 120-column rule; Prettier formats every file.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // server/wasm is AssemblyScript (decorators on functions), checked by its own compiler.
  { ignores: ['dist/**', 'out/**', '**/node_modules/**', '.e2e-cache/**', 'server/wasm/**', '**/*.js', '**/*.mjs'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tseslint.parser },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      'max-len': ['error', { code: 120, tabWidth: 2, ignoreUrls: true }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrors: 'none',
          ignoreRestSiblings: true,
        },
      ],
      'no-var': 'error',
      'prefer-const': ['error', { destructuring: 'all' }],
      eqeqeq: ['error', 'smart'],
      'no-debugger': 'error',
      'no-duplicate-imports': 'off',
      'no-unsafe-finally': 'error',
      'no-dupe-keys': 'error',
      'no-self-assign': 'error',
      'no-unreachable': 'error',
      'no-control-regex': 'error',
    },
  },
);
