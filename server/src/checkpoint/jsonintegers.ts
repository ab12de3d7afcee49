// Finds a shape or data_offsets number written as a float (`2.0`, `1e2`). JSON.parse turns
// those into integers, but the reference reader deserialises these fields as usize and
// refuses them, so accepting them would let two readers disagree about a file.
// Iterative, like jsonkeys.ts, and run only on text JSON.parse has accepted.

export interface FloatLiteral {
  tensor: string;
  field: 'shape' | 'data_offsets';
  literal: string;
}

const INTEGER_FIELDS = new Set(['shape', 'data_offsets']);

export function findFloatInteger(text: string): FloatLiteral | undefined {
  // The keys that hold each open level; a tensor's field array is at depth 3.
  const keys: (string | undefined)[] = [];
  let lastKey: string | undefined;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      keys.push(lastKey);
      lastKey = undefined;
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      keys.pop();
      i++;
    } else if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        j++;
      }
      // A string followed by ':' is a key.
      let k = j + 1;
      while (k < n && (text[k] === ' ' || text[k] === '\t' || text[k] === '\n' || text[k] === '\r')) k++;
      if (text[k] === ':') lastKey = escaped ? JSON.parse(text.slice(i, j + 1)) : text.slice(i + 1, j);
      i = j + 1;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < n && /[0-9.eE+-]/.test(text[j])) j++;
      const literal = text.slice(i, j);
      if (/[.eE]/.test(literal) && keys.length === 3 && keys[1] !== '__metadata__' && INTEGER_FIELDS.has(keys[2]!)) {
        return { tensor: keys[1]!, field: keys[2] as FloatLiteral['field'], literal };
      }
      i = j;
    } else i++;
  }
  return undefined;
}
