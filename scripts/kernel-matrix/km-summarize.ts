// SPDX-License-Identifier: Apache-2.0
// km-summarize.ts OUT KDIR: the kernel matrix's summary (markdown) from
// OUT/<kernel>/<layout>/{tap/*.tap,doctor.json,job.log,guest.log}: kernel ×
// cgroup layout × pass/skip/fail, per test file, every failure and skip
// reason, the doctor checks that differ. The last line is "RESULT: ok" or
// "RESULT: <n> failing"; kmatrix.sh fails CI on anything else.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface FileResult { name: string; tests: number; pass: number; fail: number; skip: number; todo: number; crashed: boolean; secs?: number; failures: string[]; skips: { title: string; why: string }[] }
interface Run { kernel: string; suite: string; layout: string; files: FileResult[]; guest: string; doctor?: Doctor; booted: boolean }
interface Doctor { ready?: boolean; checks: { id: string; ok: boolean; detail?: string; severity?: string }[] }

const [out, kdir] = process.argv.slice(2);
if (!out) throw new Error('usage: km-summarize.ts OUT [KDIR]');

function parseTap(text: string, name: string): FileResult {
  const r: FileResult = { name, tests: 0, pass: 0, fail: 0, skip: 0, todo: 0, crashed: false, failures: [], skips: [] };
  const num = (k: string) => { const m = new RegExp(`^# ${k} (\\d+)$`, 'm').exec(text); return m ? Number(m[1]) : undefined; };
  const tests = num('tests');
  if (tests === undefined) r.crashed = true;
  r.tests = tests ?? 0; r.pass = num('pass') ?? 0; r.skip = num('skipped') ?? 0; r.todo = num('todo') ?? 0;
  r.fail = (num('fail') ?? 0) + (num('cancelled') ?? 0);
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b ?(.*))?$/.exec(lines[i]);
    if (!m) continue;
    const [, indent, verdict, title, directive, why] = m;
    // The YAML block after a result: its type (suite or test) and first error line.
    let type = 'test'; let err = '';
    for (let j = i + 1; j < lines.length && j < i + 40; j++) {
      const l = lines[j].trim();
      if (l === '...') break;
      const t = /^type: '(\w+)'/.exec(l); if (t) type = t[1];
      const e = /^error: (?:\|-|'(.*)'|"(.*)")?$/.exec(l);
      if (e && !err) err = (e[1] ?? e[2] ?? lines[j + 1]?.trim() ?? '').slice(0, 200);
    }
    const depth = indent.length / 4;
    const label = `${'  '.repeat(depth)}${title}`;
    if (verdict === 'not ok' && !directive && type === 'test') r.failures.push(`${label}: ${err}`);
    if (directive === 'SKIP') r.skips.push({ title: title.trim(), why: why || '(no reason)' });
    // node's "# skipped" counts tests only: a skipped describe (a conformance file's gate) counts as one here.
    if (directive === 'SKIP' && type === 'suite') { r.skip += 1; r.tests += 1; }
  }
  if (r.crashed) { r.fail += 1; r.failures.push(`(the test process died before its summary: see tap/${name}.err)`); }
  return r;
}

function readRuns(): Run[] {
  const runs: Run[] = [];
  if (!existsSync(out)) return runs;
  for (const kernel of readdirSync(out).sort(byVersion)) {
    const kpath = join(out, kernel);
    if (!existsSync(join(kpath)) || kernel.endsWith('.md')) continue;
    let suite = '';
    if (kdir && existsSync(join(kdir, `.suite-${kernel}`))) suite = readFileSync(join(kdir, `.suite-${kernel}`), 'utf8').trim();
    for (const layout of readdirSync(kpath).sort().reverse()) {
      const dir = join(kpath, layout);
      if (!existsSync(join(dir, 'job.sh'))) continue;
      const times = new Map<string, number>();
      const jobLog = existsSync(join(dir, 'job.log')) ? readFileSync(join(dir, 'job.log'), 'utf8') : '';
      for (const m of jobLog.matchAll(/^(\S+) rc \d+ (\d+)s$/gm)) times.set(m[1], Number(m[2]));
      const expected = [...readFileSync(join(dir, 'job.sh'), 'utf8').matchAll(/^run (\S+) /gm)].map((m) => m[1]);
      const files: FileResult[] = [];
      for (const name of expected) {
        const tap = join(dir, 'tap', `${name}.tap`);
        const r = existsSync(tap) ? parseTap(readFileSync(tap, 'utf8'), name)
          : { ...parseTap('', name), failures: ['(not run: the guest stopped before it)'] };
        r.secs = times.get(name);
        files.push(r);
      }
      const guest = existsSync(join(dir, 'guest.log')) ? readFileSync(join(dir, 'guest.log'), 'utf8').trim().split('\n').pop()! : 'not run';
      let doctor: Doctor | undefined;
      try { doctor = JSON.parse(readFileSync(join(dir, 'doctor.json'), 'utf8')); } catch { /* none */ }
      runs.push({ kernel, suite, layout, files, guest, doctor, booted: existsSync(join(dir, 'stage2.log')) });
    }
  }
  return runs;
}

function byVersion(a: string, b: string): number {
  const v = (s: string) => (/^(\d+)\.(\d+)(?:\.(\d+))?/.exec(s) ?? []).slice(1).map(Number);
  const [x, y] = [v(a), v(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return a.localeCompare(b);
}

const short = (k: string) => k.replace(/-cloud-amd64$/, '');
const sum = (fs: FileResult[], k: 'pass' | 'fail' | 'skip' | 'todo' | 'tests') => fs.reduce((n, f) => n + f[k], 0);
const runs = readRuns();
const lines: string[] = [];
lines.push('## Kernel matrix summary', '');
lines.push('| kernel | suite | cgroup layout | files | tests | pass | skip | fail | todo | guest wall |', '|---|---|---|---|---|---|---|---|---|---|');
let failing = 0;
for (const r of runs) {
  const fail = sum(r.files, 'fail') + (r.booted ? 0 : 1);
  failing += fail;
  const wall = /(\d+) s$/.exec(r.guest)?.[1];
  lines.push(`| ${short(r.kernel)} | ${r.suite} | ${r.layout} | ${r.files.length} | ${sum(r.files, 'tests')} | ${sum(r.files, 'pass')} | ${sum(r.files, 'skip')} | ${fail} | ${sum(r.files, 'todo')} | ${wall ? `${wall} s` : r.guest} |`);
}
// Per test file: pass/skip/fail on each kernel × layout.
const cols = runs.map((r) => `${short(r.kernel)} ${r.layout === 'unified' ? 'u' : r.layout[0]}`);
const names = [...new Set(runs.flatMap((r) => r.files.map((f) => f.name)))];
lines.push('', 'Per file, pass/skip/fail (u = cgroup2 at /sys/fs/cgroup, h = hybrid, cgroup2 at /sys/fs/cgroup/unified):', '');
lines.push(`| file | ${cols.join(' | ')} |`, `|---|${cols.map(() => '---').join('|')}|`);
for (const n of names) {
  const cells = runs.map((r) => {
    const f = r.files.find((x) => x.name === n);
    if (!f) return '';
    return `${f.pass}/${f.skip}/${f.fail}${f.crashed ? ' ✝' : ''}${f.secs !== undefined ? ` (${f.secs}s)` : ''}`;
  });
  lines.push(`| ${n} | ${cells.join(' | ')} |`);
}
// Doctor checks that are not ok on some kernel.
const doctorIds = [...new Set(runs.flatMap((r) => r.doctor?.checks.filter((c) => !c.ok).map((c) => c.id) ?? []))];
if (doctorIds.length) {
  const uni = runs.filter((r) => r.layout === 'unified');
  lines.push('', 'Doctor checks that are not ok on some kernel (unified layout):', '');
  lines.push(`| check | ${uni.map((r) => short(r.kernel)).join(' | ')} |`, `|---|${uni.map(() => '---').join('|')}|`);
  for (const id of doctorIds) {
    lines.push(`| ${id} | ${uni.map((r) => { const c = r.doctor?.checks.find((x) => x.id === id); return c ? (c.ok ? 'ok' : 'no') : '?'; }).join(' | ')} |`);
  }
  lines.push(`| ready | ${uni.map((r) => String(r.doctor?.ready ?? '?')).join(' | ')} |`);
}
for (const r of runs) {
  const fails = r.files.flatMap((f) => f.failures.map((x) => `${f.name}: ${x}`));
  if (!r.booted) fails.unshift(`the guest did not reach stage 2 (${r.guest})`);
  if (fails.length) lines.push('', `Failures, ${short(r.kernel)} ${r.layout}:`, ...fails.map((x) => `- ${x}`));
}
// Skip reasons, grouped: the gate's reason names the missing feature.
const skipReasons = new Map<string, Set<string>>();
for (const r of runs) for (const f of r.files) for (const s of f.skips) {
  const reason = s.why;
  const key = `${short(r.kernel)} ${r.layout}`;
  if (!skipReasons.has(reason)) skipReasons.set(reason, new Set());
  skipReasons.get(reason)!.add(key);
}
if (skipReasons.size) {
  lines.push('', 'Skip reasons (kernels × layouts where they occur; a skip is a declared gate whose probe said no):');
  for (const [reason, where] of skipReasons) lines.push(`- ${reason} — ${[...where].join(', ')}`);
}
lines.push('', failing === 0 && runs.length > 0 ? 'RESULT: ok' : `RESULT: ${runs.length === 0 ? 'no runs' : `${failing} failing`}`);
console.log(lines.join('\n'));
