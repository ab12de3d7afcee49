// Finds the first duplicated key in a JSON text. JSON.parse silently keeps the last of
// two equal keys, so a header could show one tensor entry to us and another to a
// different reader; the reference implementation refuses such headers, and so do we.
// Runs on text JSON.parse has already accepted, so it only tracks strings and nesting.
// Iterative (no recursion): hostile nesting depth cannot overflow the stack.

export interface DuplicateKey {
  /** The repeated key (decoded). */
  key: string;
  /** Keys leading to the object that repeats it; [] for the top-level object. */
  path: string[];
}

interface Level {
  keys: Set<string> | null; // null for arrays
  key: string | undefined; // the key that holds this level in its parent
}

export function findDuplicateKey(text: string): DuplicateKey | undefined {
  const stack: Level[] = [];
  let expectKey = false;
  let lastKey: string | undefined;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), key: lastKey });
      expectKey = true;
      i++;
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: null, key: lastKey });
      expectKey = false;
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      expectKey = stack.length > 0 && stack[stack.length - 1].keys !== null;
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
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key: string = escaped ? JSON.parse(text.slice(i, j + 1)) : raw;
        const level = stack[stack.length - 1];
        if (level.keys!.has(key)) return { key, path: stack.slice(1).map((l) => l.key ?? '') };
        level.keys!.add(key);
        lastKey = key;
        expectKey = false;
      }
      i = j + 1;
    } else {
      i++;
    }
  }
  return undefined;
}
