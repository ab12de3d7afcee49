// The stdio framing guard (server/src/lsp/framing.ts) must accept any split of valid LSP traffic
// into chunks and flag the first broken header, whatever chunk it arrives in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FramingGuard, MAX_MESSAGE_BYTES } from '../../server/src/lsp/framing';

const frame = (body: string, extra = '') =>
  Buffer.from(`Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`);

function feed(bytes: Buffer, seed: number): string | undefined {
  const g = new FramingGuard();
  let s = seed;
  for (let at = 0; at < bytes.length;) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (s % 97);
    const why = g.push(bytes.subarray(at, at + n));
    if (why) return why;
    at += n;
  }
  return undefined;
}

test('valid traffic split at every kind of boundary passes', () => {
  const msgs = [
    frame('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'),
    frame(
      '{"x":"\u00e9\u4e2d\r\n\r\nContent-Length: 5"}',
      'Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n',
    ),
    frame(''),
    frame('x'.repeat(5000)),
  ];
  const all = Buffer.concat([...msgs, ...msgs, ...msgs]);
  for (let seed = 1; seed <= 200; seed++) assert.equal(feed(all, seed), undefined, `seed ${seed}`);
  assert.equal(new FramingGuard().push(all), undefined, 'one chunk');
});

test('broken headers are named, after valid messages and in any chunking', () => {
  const ok = frame('{"a":1}');
  const cases: [string, RegExp][] = [
    ['Content-Length: abc\r\n\r\n{}', /Content-Length "abc" is not a byte count/],
    ['Content-Length: -5\r\n\r\n', /is not a byte count/],
    ['Content-Type: x\r\n\r\n{}', /has no Content-Length/],
    ['no colon here\r\n\r\n', /has no ':'/],
    [`Content-Length: ${MAX_MESSAGE_BYTES + 1}\r\n\r\n`, /over the 268435456-byte limit/],
    ['X'.repeat(20_000), /header is longer than 16384 bytes/],
  ];
  for (const [bad, why] of cases) {
    for (let seed = 1; seed <= 20; seed++)
      assert.match(
        feed(Buffer.concat([ok, ok, Buffer.from(bad)]), seed) ?? 'accepted',
        why,
        `${JSON.stringify(bad.slice(0, 30))} seed ${seed}`,
      );
  }
});
