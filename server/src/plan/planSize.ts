// Plans are small (a per-matrix plan for a 70B model is ~50 KB), and every diagnostic pass and
// hover re-reads the whole plan: an 11.6 MB plan cost the language server 16 s per pass and
// 5 s per hover. A plan above this size is refused with one diagnostic / one line instead, so
// every plan the checker accepts is diagnosed in well under a second.

export const MAX_PLAN_BYTES = 1024 * 1024;

/** Why this plan text is refused for its size, or undefined. */
export function planTooLarge(text: string): string | undefined {
  // A UTF-16 unit is at most 3 UTF-8 bytes, so short texts need no byte count.
  if (text.length <= MAX_PLAN_BYTES / 3) return undefined;
  const bytes = Buffer.byteLength(text);
  return bytes <= MAX_PLAN_BYTES ? undefined : planSizeMessage(bytes);
}

export function planSizeMessage(bytes: number): string {
  return (
    `the plan is ${bytes} bytes, over the ${MAX_PLAN_BYTES}-byte (1 MiB) limit for plan files; ` +
    'split it or use globs'
  );
}
