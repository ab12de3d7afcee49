// Filled in by esbuild (`define`) from package.json; "dev" when run unbundled.
declare const __LOFTQ_VERSION__: string | undefined;
export const VERSION = typeof __LOFTQ_VERSION__ === 'string' ? __LOFTQ_VERSION__ : 'dev';
export const TOOL = `loftq-lens ${VERSION}`;
