// SPDX-License-Identifier: Apache-2.0
// The benchmark's chart: one panel per headline figure (bars = medians per
// scenario, whiskers = min–max over rounds, both placements side by side), and a
// full-width panel of the tc programs' ns per packet with the 100 ns goal.
// Plain SVG 1.1, no scripts or external resources.
import type { BenchReport } from './run.ts';
import type { Figure } from './figures.ts';
import { short } from './stats.ts';
import type { Scenario, Placement } from './topology.ts';

export const SCENARIO_COLORS: Record<Scenario, string> = {
  direct: '#8c8c8c',
  'direct+sidecar': '#b07aa1',
  iptables: '#e15759',
  'ebpf+sockmap': '#59a14f',
  ebpf: '#4e79a7',
  'ambient/iptables': '#f28e2b',
  'ambient/ebpf': '#76b7b2',
};
const PLACEMENT_LABEL: Record<Placement, string> = { 'same-node': 'same node', 'cross-node': 'cross node' };
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const n = (x: number) => (Math.round(x * 10) / 10).toString();

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${n(x)}" y="${n(y)}"${attrs ? ` ${attrs}` : ''}>${esc(s)}</text>`;
}

/** A "nice" axis maximum and step (1, 2, 2.5, 5 × 10^k) for about `ticks` ticks. */
export function niceScale(max: number, ticks = 5): { max: number; step: number } {
  if (!(max > 0) || !Number.isFinite(max)) return { max: 1, step: 0.2 };
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  return { max: Math.ceil(max / step - 1e-9) * step, step };
}

/** The figures the chart shows, in panel order. */
export function chartFigures(r: BenchReport): Figure[][] {
  const byTest = (id: string, stat: string) => r.figures.filter((f) => f.test === id && f.stat === stat);
  const panels: Figure[][] = [];
  const rr = r.tests.filter((t) => t.kind === 'rr');
  for (const t of rr) panels.push(byTest(t.id, 'rps'));
  for (const t of rr) panels.push(byTest(t.id, 'p99_us'));
  panels.push(byTest('conn', 'cps'));
  panels.push(byTest('bulk', 'gbps'));
  return panels.filter((p) => p.length > 0);
}

function panelTitle(f: Figure): [string, string] {
  const better = f.better === 'higher' ? 'higher is better' : 'lower is better';
  if (f.test === 'bulk') return ['bulk throughput, 1 stream', `Gbit/s, ${better}`];
  if (f.test === 'conn') return [`new connections/s (${f.connections} concurrent)`, `1 request per connection, ${better}`];
  const what = f.stat === 'rps' ? 'requests/s' : f.stat === 'p99_us' ? 'p99 latency (µs)' : 'p50 latency (µs)';
  return [`${what}, ${f.connections} connection${f.connections === 1 ? '' : 's'}`, `keep-alive, ${better}`];
}

interface Box { x: number; y: number; w: number; h: number }

function barPanel(box: Box, figs: Figure[], scenarios: Scenario[]): string {
  const out: string[] = [];
  const [title, sub] = panelTitle(figs[0]);
  out.push(`<rect x="${n(box.x)}" y="${n(box.y)}" width="${n(box.w)}" height="${n(box.h)}" fill="#ffffff" stroke="#d0d0d0"/>`);
  out.push(text(box.x + box.w / 2, box.y + 18, title, 'text-anchor="middle" font-size="13" font-weight="bold"'));
  out.push(text(box.x + box.w / 2, box.y + 33, sub, 'text-anchor="middle" font-size="10.5" fill="#555"'));
  const plot: Box = { x: box.x + 52, y: box.y + 58, w: box.w - 62, h: box.h - 58 - 34 };
  // A whisker far above every median (one bad round) is clipped, so the bars stay readable.
  const tops = figs.flatMap((f) => scenarios.map((m) => f.scenarios[m].max)).filter(Number.isFinite);
  const meds = figs.flatMap((f) => scenarios.map((m) => f.scenarios[m].median)).filter(Number.isFinite);
  const top = Math.min(Math.max(...tops, 0), 2.5 * Math.max(...meds, 0));
  const { max, step } = niceScale(top * 1.08);
  const y = (v: number) => plot.y + plot.h - (Math.max(0, v) / max) * plot.h;
  for (let v = 0; v <= max + step / 2; v += step) {
    out.push(`<line x1="${n(plot.x)}" y1="${n(y(v))}" x2="${n(plot.x + plot.w)}" y2="${n(y(v))}" stroke="${v === 0 ? '#333' : '#e6e6e6'}"/>`);
    out.push(text(plot.x - 5, y(v) + 3.5, short(v), 'text-anchor="end" font-size="10" fill="#333"'));
  }
  out.push(`<line x1="${n(plot.x)}" y1="${n(plot.y)}" x2="${n(plot.x)}" y2="${n(plot.y + plot.h)}" stroke="#333"/>`);
  out.push(text(box.x + 13, plot.y + plot.h / 2, figs[0].unit, `text-anchor="middle" font-size="10.5" fill="#333" transform="rotate(-90 ${n(box.x + 13)} ${n(plot.y + plot.h / 2)})"`));

  const groupW = plot.w / figs.length;
  figs.forEach((f, gi) => {
    const gx = plot.x + gi * groupW;
    const pad = groupW * 0.05;
    const bw = (groupW - 2 * pad) / scenarios.length;
    scenarios.forEach((m, i) => {
      const s = f.scenarios[m];
      const x = gx + pad + i * bw;
      if (!Number.isFinite(s.median)) {
        out.push(text(x + bw / 2, y(0) - 4, 'n/a', 'text-anchor="middle" font-size="9" fill="#999"'));
        return;
      }
      out.push(`<rect class="bar" data-scenario="${esc(m)}" data-figure="${esc(f.id)}" x="${n(x + 1.5)}" y="${n(y(s.median))}" width="${n(bw - 3)}" height="${n(y(0) - y(s.median))}" fill="${SCENARIO_COLORS[m]}"><title>${esc(`${m}, ${PLACEMENT_LABEL[f.placement]}: ${short(s.median)} ${f.unit} (min ${short(s.min)}, max ${short(s.max)})`)}</title></rect>`);
      const cx = x + bw / 2;
      const clipped = s.max > max;
      const hi = Math.min(s.max, max);
      if (s.max > s.min) {
        const cap = Math.min(5, bw / 3);
        const topCap = clipped
          ? `M${n(cx - cap)} ${n(y(hi) + 5)}L${n(cx)} ${n(y(hi))}L${n(cx + cap)} ${n(y(hi) + 5)}` // arrow: goes on up to s.max
          : `M${n(cx - cap)} ${n(y(hi))}H${n(cx + cap)}`;
        out.push(`<path class="whisker" d="M${n(cx)} ${n(y(s.min))}V${n(y(hi))}M${n(cx - cap)} ${n(y(s.min))}H${n(cx + cap)}${topCap}" stroke="#222" stroke-width="1.2" fill="none"/>`);
      }
      if (clipped) out.push(text(cx + 3, y(hi) + 12, `max ${short(s.max)}`, 'font-size="8" fill="#a00"'));
      out.push(text(cx, (clipped ? y(hi) : y(s.max)) - 4, short(s.median), 'text-anchor="middle" font-size="8.5" fill="#222"'));
    });
    out.push(text(gx + groupW / 2, plot.y + plot.h + 15, PLACEMENT_LABEL[f.placement], 'text-anchor="middle" font-size="11" fill="#222"'));
    const r = f.ratios['ebpf/iptables'];
    const a = f.ratios['ambient/ebpf ÷ ambient/iptables'];
    const said = [Number.isFinite(r) ? `eBPF/iptables ${r.toFixed(2)}×` : '', Number.isFinite(a) ? `ambient ${a.toFixed(2)}×` : ''].filter(Boolean).join(' · ');
    if (said) out.push(text(gx + groupW / 2, plot.y + plot.h + 28, said, 'text-anchor="middle" font-size="9.5" fill="#4e79a7"'));
  });
  return out.join('\n');
}

function tcPanel(box: Box, r: BenchReport): string {
  const tc = r.tc!;
  const out: string[] = [];
  out.push(`<rect x="${n(box.x)}" y="${n(box.y)}" width="${n(box.w)}" height="${n(box.h)}" fill="#ffffff" stroke="#d0d0d0"/>`);
  out.push(text(box.x + box.w / 2, box.y + 18, 'tc programs: ns per packet (BPF_PROG_TEST_RUN), goal ≤ 100 ns', 'text-anchor="middle" font-size="13" font-weight="bold"'));
  out.push(text(box.x + box.w / 2, box.y + 33, `bars: median, whiskers: min–max over ${tc.trials} trials; repeat = ${tc.repeat.toLocaleString('en')} runs per call, single = one run per call (clock read, cold caches); grey: empty program, blue: trace off, orange: trace on`, 'text-anchor="middle" font-size="10.5" fill="#555"'));
  const labelW = 480;
  const plot: Box = { x: box.x + labelW, y: box.y + 48, w: box.w - labelW - 110, h: box.h - 48 - 40 };
  const rows = tc.rows;
  const rowH = plot.h / rows.length;
  const vals = rows.map((x) => x.ns.max).filter(Number.isFinite).sort((a, b) => a - b);
  // Keep the scale readable: one outlier (e.g. trace with a reader) is drawn clipped.
  const cap = vals.length > 1 && vals[vals.length - 1] > 4 * vals[vals.length - 2] ? vals[vals.length - 2] : vals[vals.length - 1] ?? 100;
  const { max, step } = niceScale(Math.max(cap, tc.goalNs) * 1.05, 8);
  const x = (v: number) => plot.x + (Math.min(v, max) / max) * plot.w;
  for (let v = 0; v <= max + step / 2; v += step) {
    out.push(`<line x1="${n(x(v))}" y1="${n(plot.y)}" x2="${n(x(v))}" y2="${n(plot.y + plot.h)}" stroke="${v === 0 ? '#333' : '#e6e6e6'}"/>`);
    out.push(text(x(v), plot.y + plot.h + 14, `${short(v)}`, 'text-anchor="middle" font-size="10" fill="#333"'));
  }
  out.push(text(plot.x + plot.w / 2, plot.y + plot.h + 28, 'ns per packet', 'text-anchor="middle" font-size="10.5" fill="#333"'));
  rows.forEach((row, i) => {
    const cy = plot.y + i * rowH + rowH / 2;
    const bh = Math.min(14, rowH * 0.7);
    const label = `${row.program.replace('mwsc_', '')} · ${row.packet}${row.trace === 'off' ? '' : ` · trace ${row.trace}`} · ${row.method}`;
    out.push(text(plot.x - 6, cy + 3.5, label.length > 92 ? `${label.slice(0, 91)}…` : label, 'text-anchor="end" font-size="10" fill="#222"'));
    const color = row.program.startsWith('empty') ? '#bdbdbd' : row.trace === 'off' ? '#4e79a7' : '#f28e2b';
    const clipped = row.ns.median > max;
    out.push(`<rect class="bar" data-figure="tc.${esc(row.id)}" x="${n(plot.x)}" y="${n(cy - bh / 2)}" width="${n(x(row.ns.median) - plot.x)}" height="${n(bh)}" fill="${color}"${clipped ? ' fill-opacity="0.6"' : ''}><title>${esc(`${row.id}: ${row.ns.median} ns (min ${row.ns.min}, max ${row.ns.max}), net ${row.netNs.toFixed(0)} ns`)}</title></rect>`);
    if (row.ns.max > row.ns.min && !clipped) {
      out.push(`<path class="whisker" d="M${n(x(row.ns.min))} ${n(cy)}H${n(x(row.ns.max))}M${n(x(row.ns.min))} ${n(cy - 4)}V${n(cy + 4)}M${n(x(row.ns.max))} ${n(cy - 4)}V${n(cy + 4)}" stroke="#222" stroke-width="1.2" fill="none"/>`);
    }
    const note = `${short(row.ns.median)} ns${row.program.startsWith('empty') ? '' : ` (net ${row.netNs.toFixed(0)})`}${clipped ? ' »' : ''}`;
    out.push(text(clipped ? plot.x + plot.w - 4 : x(row.ns.max) + 5, cy + 3.5, note, `font-size="10" fill="#222"${clipped ? ' text-anchor="end" font-weight="bold"' : ''}`));
  });
  out.push(`<line x1="${n(x(tc.goalNs))}" y1="${n(plot.y - 4)}" x2="${n(x(tc.goalNs))}" y2="${n(plot.y + plot.h)}" stroke="#c00" stroke-width="1.5" stroke-dasharray="5 3"/>`);
  out.push(text(x(tc.goalNs) + 4, plot.y + 4, `goal ${tc.goalNs} ns`, 'font-size="10" fill="#c00"'));
  return out.join('\n');
}

/** A scenario's legend entry; S4 forced on where the gate fails says so next to its colour. */
function legendLabel(r: BenchReport, m: Scenario): string {
  return m === 'ebpf+sockmap' && r.sockmap && !r.sockmap.safe ? `${m} (S4 forced, unsafe here)` : m;
}

/** The whole chart as an SVG document. */
export function renderChart(r: BenchReport): string {
  const W = 1360;
  const margin = 24;
  const gap = 18;
  const cols = 4;
  const panels = chartFigures(r);
  const pw = (W - 2 * margin - (cols - 1) * gap) / cols;
  const ph = 290;
  // The legend wraps its whisker note onto a second line when the scenarios fill the first.
  const legendW = r.scenarios.reduce((w, m) => w + 19 + legendLabel(r, m).length * 8 + 22, margin);
  const wrap = legendW + 17 + 80 * 7 > W;
  const top = wrap ? 122 : 104;
  const gridRows = Math.ceil(panels.length / cols);
  const tcH = r.tc ? 56 + r.tc.rows.length * 22 + 40 : 0;
  const H = top + gridRows * (ph + gap) + (r.tc ? tcH + gap : 0) + 20;
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${n(H)}" viewBox="0 0 ${W} ${n(H)}" font-family="${FONT}">`);
  const ambient = r.scenarios.some((m) => m.startsWith('ambient/'));
  out.push(`<title>meshwarp bench: ${r.scenarios.join(', ')}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${n(H)}" fill="#f7f7f7"/>`);
  out.push(text(margin, 34, `meshwarp bench: ${ambient ? 'sidecar and ambient' : 'sidecar'} traffic through iptables vs eBPF redirection`, 'font-size="22" font-weight="bold" fill="#111"'));
  const o = r.options;
  out.push(text(margin, 56, `${r.startedAt.slice(0, 16).replace('T', ' ')} UTC · kernel ${r.machine.kernel}, ${r.machine.cpus} CPUs · ` +
    `${o.rounds} round${o.rounds === 1 ? '' : 's'} × ${o.durationS} s, scenarios interleaved · haproxy sidecars${ambient ? ' and node proxies' : ''} (mode tcp, 1 thread), haproxy HTTP server, wrk, iperf3`, 'font-size="12.5" fill="#444"'));
  // Legend.
  let lx = margin;
  for (const m of r.scenarios) {
    const label = legendLabel(r, m);
    out.push(`<rect x="${lx}" y="70" width="14" height="14" fill="${SCENARIO_COLORS[m]}"/>`);
    out.push(text(lx + 19, 81.5, label, 'font-size="12.5" fill="#111"'));
    lx += 19 + label.length * 8 + 22;
  }
  const wy = wrap ? 18 : 0;
  if (wrap) lx = margin;
  out.push(`<path d="M${lx + 7} ${70 + wy}V${84 + wy}M${lx + 3} ${70 + wy}H${lx + 11}M${lx + 3} ${84 + wy}H${lx + 11}" stroke="#222" stroke-width="1.2" fill="none"/>`);
  out.push(text(lx + 17, 81.5 + wy, `whiskers: min–max over ${o.rounds} round${o.rounds === 1 ? '' : 's'} (machine noise); bar: median`, 'font-size="12.5" fill="#111"'));

  panels.forEach((figs, i) => {
    const box = { x: margin + (i % cols) * (pw + gap), y: top + Math.floor(i / cols) * (ph + gap), w: pw, h: ph };
    out.push(`<g class="panel">\n${barPanel(box, figs, r.scenarios)}\n</g>`);
  });
  if (r.tc) {
    const box = { x: margin, y: top + gridRows * (ph + gap), w: W - 2 * margin, h: tcH };
    out.push(`<g class="panel">\n${tcPanel(box, r)}\n</g>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
