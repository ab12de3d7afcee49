// Where a long tensor name may wrap: after a dot, slash, underscore or hyphen — never in the
// middle of a word. The webview puts a <wbr> between the pieces.

export function namePieces(name: string): string[] {
  return name.split(/(?<=[./_-])/).filter((p) => p.length > 0);
}
