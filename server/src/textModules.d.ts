// Files esbuild embeds as text (esbuild.mjs `loader`): the Python loader shipped with HQQ output.
declare module '*.py' {
  const text: string;
  export default text;
}
