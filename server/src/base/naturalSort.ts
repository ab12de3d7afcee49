// Natural order of tensor names: runs of digits compare as numbers, so `layers.2` comes
// before `layers.10`. Other text compares by code unit (stable across locales).

const RUNS = /(\d+)/;

function compareDigits(a: string, b: string): number {
  // Numbers of any length: strip leading zeros, then the longer is larger, else compare digits.
  const x = a.replace(/^0+(?=\d)/, ''),
    y = b.replace(/^0+(?=\d)/, '');
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

export function naturalCompare(a: string, b: string): number {
  const pa = a.split(RUNS),
    pb = b.split(RUNS);
  // split with a capture group alternates text, digits, text, … starting with text.
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = i % 2 ? compareDigits(pa[i], pb[i]) : pa[i] < pb[i] ? -1 : pa[i] > pb[i] ? 1 : 0;
    if (c) return c;
  }
  if (pa.length !== pb.length) return pa.length - pb.length;
  // Equal up to zero padding (`a01` vs `a1`): fall back to plain order so the sort is total.
  return a < b ? -1 : a > b ? 1 : 0;
}
