// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import local from './scripts/eslint-no-import-cycle.js';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'native/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { local },
    rules: {
      // No module imports, through any chain, one that imports it back (type-only imports too).
      'local/no-import-cycle': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // src/ ships (dist/src in the package and the image); tests, the fuzzer and the benchmarks do not.
    files: ['src/**/*.ts'],
    ignores: ['src/**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^(\\.\\./)+(test|fuzz|bench)/', message: 'shipped code in src/ must not import test, fuzz or bench code' },
          ],
        },
      ],
      // Host-locale collation: an order that differs between hosts, and its first use brings the
      // collation data of every locale into the process (src/lib/order.ts).
      // toISOString: Node 20 looks up the host's time zone names for it (src/lib/time.ts).
      'no-restricted-properties': [
        'error',
        { property: 'localeCompare', message: 'sort with compareText (src/lib/order.ts)' },
        { property: 'toISOString', message: 'format with isoTime or isoSeconds (src/lib/time.ts)' },
      ],
    },
  },
  {
    files: ['bin/**/*.js', 'eslint.config.js', 'scripts/**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
