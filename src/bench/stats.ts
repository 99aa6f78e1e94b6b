// SPDX-License-Identifier: Apache-2.0
// Summaries over rounds (median with the min–max spread that shows the
// machine's noise) and the number formatting the table and the chart share.

export interface Summary {
  median: number;
  min: number;
  max: number;
  /** One value per round (or trial), in the order measured. */
  samples: number[];
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function summarize(samples: readonly number[]): Summary {
  const ok = samples.filter((x) => Number.isFinite(x));
  if (ok.length === 0) return { median: NaN, min: NaN, max: NaN, samples: [...samples] };
  return { median: median(ok), min: Math.min(...ok), max: Math.max(...ok), samples: [...samples] };
}

/** a/b, or NaN when either is missing or b is 0. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

/** 3 significant digits with a k/M/G suffix: 1234 -> "1.23k", 0.5 -> "0.500". */
export function short(x: number): string {
  if (!Number.isFinite(x)) return '—';
  const a = Math.abs(x);
  const [d, s] = a >= 1e9 ? [1e9, 'G'] : a >= 1e6 ? [1e6, 'M'] : a >= 1e3 ? [1e3, 'k'] : [1, ''];
  const v = x / d;
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${v.toFixed(digits)}${s}`;
}

/** "1.23k [1.20–1.25k]": median and spread with one suffix. */
export function spread(s: Summary): string {
  if (!Number.isFinite(s.median)) return '—';
  const a = Math.max(Math.abs(s.min), Math.abs(s.max), Math.abs(s.median));
  const [d, suf] = a >= 1e9 ? [1e9, 'G'] : a >= 1e6 ? [1e6, 'M'] : a >= 1e3 ? [1e3, 'k'] : [1, ''];
  const f = (x: number) => {
    const v = x / d;
    return v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  };
  return s.min === s.max ? `${f(s.median)}${suf}` : `${f(s.median)}${suf} [${f(s.min)}–${f(s.max)}]`;
}

/** "1.07×" */
export function times(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : '—';
}

/** "1m05s" / "42s" */
export function duration(s: number): string {
  const t = Math.max(0, Math.round(s));
  return t >= 60 ? `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s` : `${t}s`;
}
