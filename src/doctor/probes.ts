// SPDX-License-Identifier: Apache-2.0
// The machine checks behind `meshwarp doctor`. Read-only: programs and maps
// are loaded and closed at once, nothing is attached or pinned, and the only
// change ever made is mounting bpffs when the caller asks (`--fix`).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { machine, release } from 'node:os';
import { join } from 'node:path';
import { loadAmbientObject } from '../datapath/ambient/structs.ts';
import { BpfObject, CAP, CGROUP2_SUPER_MAGIC, FEATURES, have, parseKernelVersion } from '../bpf/index.ts';
import { DATAPATH_FEATURES } from '../bpf/features.ts';
import { cgroup2Mount } from '../sys/cgroup.ts';
import { BPFFS_DEFAULT, ensureBpffs, onBpffs } from '../sys/bpffs.ts';
import { OBJECTS, TOOLS, CNI_PLUGIN_DIR, CNI_PLUGINS, objectId, toolId } from './catalog.ts';
import { ROOT } from '../paths.ts';

/** One check: a stable id, whether it passed, and what was found (one line). */
export interface Probe { id: string; ok: boolean; detail: string }

export interface KernelInfo {
  release: string;
  /** "major.minor.patch" parsed from the release, or null when it does not parse. */
  version: string | null;
  major: number;
  minor: number;
  arch: string;
  btf: boolean;
  tcx: boolean;
}

export interface ToolInfo { version: string; backend: 'nf_tables' | 'legacy' | null }

export interface HostInfo {
  uid: number;
  privileged: boolean;
  node: string;
  cgroup2: { path: string | null; layout: 'unified' | 'hybrid' | null };
  bpffs: { path: string; mounted: boolean; mountedByFix: boolean };
  iptables: ToolInfo | null;
  ip6tables: ToolInfo | null;
}

export interface ProbeReport { kernel: KernelInfo; host: HostInfo; checks: Probe[] }

export interface ProbeOptions {
  /** Mount bpffs at /sys/fs/bpf when it is missing (the only change doctor makes). */
  fix?: boolean;
  /** Repository root (holds bpf/ and build/bpf/). */
  root?: string;
}

// Capabilities meshwarp needs: load (BPF), attach to interfaces and cgroups
// (NET_ADMIN, SYS_ADMIN for cgroup and netns work).
const CAPS: [string, number][] = (['NET_ADMIN', 'SYS_ADMIN', 'BPF'] as const).map((c) => [`CAP_${c}`, CAP[c]]);
// Only a guard against a hung tool: emulated machines run `clang --version` many times slower.
const TOOL_TIMEOUT_MS = 60_000;

export async function runProbes(opts: ProbeOptions = {}): Promise<ProbeReport> {
  const root = opts.root ?? ROOT;
  // External tools run in parallel while the in-process probes go.
  const toolRuns = Object.entries(TOOLS).map(([name, argv]) => version(argv).then((v) => [name, v] as const));
  const checks: Probe[] = [];
  const add = (id: string, ok: boolean, detail: string) => { checks.push({ id, ok, detail }); };

  // system
  const rel = release();
  const v = parseKernelVersion(rel);
  const kernel: KernelInfo = {
    release: rel, version: v ? v.join('.') : null,
    major: v?.[0] ?? 0, minor: v?.[1] ?? 0, arch: machine(),
    btf: existsSync('/sys/kernel/btf/vmlinux'), tcx: false,
  };
  add('kernel', v !== undefined, `Linux ${rel} (${kernel.arch})`);
  const priv = privileges();
  add('privileges', priv.ok, priv.detail);
  add('btf', kernel.btf, kernel.btf ? '/sys/kernel/btf/vmlinux' : 'no /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF)');
  const cg = cgroup2();
  add('cgroup2', cg.path !== null, cg.detail);
  const bpffs = bpffsCheck(opts.fix === true);
  add('bpffs', bpffs.mounted, bpffs.detail);
  const v6 = ipv6();
  add('ipv6', v6.ok, v6.detail);
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  add('node', nodeMajor >= 24, `Node.js ${process.version}${nodeMajor >= 24 ? '' : ' (meshwarp needs >= 24)'}`);

  // eBPF: without privilege the kernel refuses every load, which would read as "unsupported".
  const notProbed = 'not probed: needs root (CAP_BPF)';
  for (const f of FEATURES) {
    if (!priv.ok) { add(f.id, false, notProbed); continue; }
    const r = have(f.id);
    add(f.id, r.available, r.reason);
  }
  kernel.tcx = priv.ok && have('tcx').available;
  for (const name of objectNames(root)) {
    if (!priv.ok) { add(objectId(name), false, notProbed); continue; }
    const o = loadObject(root, name);
    add(objectId(name), o.ok, o.detail);
  }
  // Can each datapath load at all (every probe it needs, named when missing: docs/kernels.md)?
  for (const f of DATAPATH_FEATURES) {
    if (!priv.ok) { add(f.id, false, notProbed); continue; }
    const r = have(f.id);
    add(f.id, r.available, r.reason);
  }

  // tools
  const cni = CNI_PLUGINS.filter((p) => !existsSync(join(CNI_PLUGIN_DIR, p)));
  add(toolId('cni_plugins'), cni.length === 0, cni.length === 0
    ? `${CNI_PLUGINS.join(', ')} in ${CNI_PLUGIN_DIR}`
    : `missing in ${CNI_PLUGIN_DIR}: ${cni.join(', ')}`);
  const tools = new Map(await Promise.all(toolRuns));
  for (const name of Object.keys(TOOLS)) {
    const v = tools.get(name)!;
    add(toolId(name), v.ok, v.detail);
  }
  const toolInfo = (name: string): ToolInfo | null => {
    const v = tools.get(name)!;
    if (!v.ok) return null;
    const b = /\((nf_tables|legacy)\)/.exec(v.detail);
    return { version: v.detail, backend: b ? (b[1] as 'nf_tables' | 'legacy') : null };
  };

  const host: HostInfo = {
    uid: process.getuid?.() ?? -1, privileged: priv.ok, node: process.version,
    cgroup2: { path: cg.path, layout: cg.layout }, bpffs: { path: BPFFS_DEFAULT, mounted: bpffs.mounted, mountedByFix: bpffs.fixed },
    iptables: toolInfo('iptables'), ip6tables: toolInfo('ip6tables'),
  };
  return { kernel, host, checks };
}

function privileges(): { ok: boolean; detail: string } {
  const uid = process.getuid?.() ?? -1;
  let eff = 0n;
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    eff = hex ? BigInt(`0x${hex}`) : 0n;
  } catch { /* not Linux procfs: treat as no capabilities */ }
  const missing = CAPS.filter(([, bit]) => (eff & (1n << BigInt(bit))) === 0n).map(([n]) => n);
  return missing.length === 0
    ? { ok: true, detail: `uid ${uid}, ${CAPS.map(([n]) => n).join(' ')}` }
    : { ok: false, detail: `uid ${uid}, missing ${missing.join(' ')}` };
}

function cgroup2(): { path: string | null; layout: 'unified' | 'hybrid' | null; detail: string } {
  let path: string;
  try {
    path = cgroup2Mount();
  } catch (e) {
    return { path: null, layout: null, detail: (e as Error).message };
  }
  let top = 0;
  try { top = statfsSync('/sys/fs/cgroup').type; } catch { /* no /sys/fs/cgroup */ }
  const layout = top === CGROUP2_SUPER_MAGIC ? 'unified' : 'hybrid';
  return {
    path, layout,
    detail: layout === 'unified' ? `${path} (unified)` : `${path} (hybrid: /sys/fs/cgroup is not cgroup2)`,
  };
}

function bpffsCheck(fix: boolean): { mounted: boolean; fixed: boolean; detail: string } {
  if (onBpffs(BPFFS_DEFAULT)) return { mounted: true, fixed: false, detail: BPFFS_DEFAULT };
  if (!fix) return { mounted: false, fixed: false, detail: `${BPFFS_DEFAULT} is not a bpf filesystem` };
  try {
    ensureBpffs(BPFFS_DEFAULT);
    return { mounted: true, fixed: true, detail: `${BPFFS_DEFAULT} (mounted by --fix)` };
  } catch (e) {
    return { mounted: false, fixed: false, detail: `mount at ${BPFFS_DEFAULT} failed: ${(e as Error).message}` };
  }
}

function ipv6(): { ok: boolean; detail: string } {
  if (!existsSync('/proc/net/if_inet6')) return { ok: false, detail: 'IPv6 is not available in this kernel' };
  try {
    if (readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8').trim() === '1') {
      return { ok: false, detail: 'IPv6 disabled (net.ipv6.conf.all.disable_ipv6 = 1)' };
    }
  } catch { /* sysctl missing: IPv6 still present */ }
  return { ok: true, detail: 'enabled' };
}

/** The sources of object `name`: bpf/<name>/*.bpf.c, linked into build/bpf/<name>.bpf.o (Makefile). */
function sourcesOf(root: string, name: string): string[] {
  try {
    return readdirSync(join(root, 'bpf', name)).filter((f) => f.endsWith('.bpf.c')).map((f) => join(root, 'bpf', name, f));
  } catch { /* installed without sources */ }
  return [];
}

/** The known objects plus any bpf/<dir>/ with .bpf.c sources in the tree. */
function objectNames(root: string): string[] {
  const names = new Set(OBJECTS);
  try {
    for (const d of readdirSync(join(root, 'bpf'), { withFileTypes: true })) {
      if (d.isDirectory() && sourcesOf(root, d.name).length > 0) names.add(d.name);
    }
  } catch { /* installed without sources */ }
  return [...names];
}

/** Loads build/bpf/<name>.bpf.o (verifier included) and closes it. */
function loadObject(root: string, name: string): { ok: boolean; detail: string } {
  const obj = join(root, 'build', 'bpf', `${name}.bpf.o`);
  if (!existsSync(obj)) return { ok: false, detail: `build/bpf/${name}.bpf.o not built (make bpf)` };
  const built = statSync(obj).mtimeMs;
  const stale = sourcesOf(root, name).some((src) => statSync(src).mtimeMs > built) ? '; older than its source (make bpf)' : '';
  try {
    // The ambient object loads as the driver loads it (without the TIME_WAIT hand-off where the kernel refuses it).
    const { obj: o, twHandoff } = name === 'ambient' ? loadAmbientObject(obj) : { obj: BpfObject.load(obj), twHandoff: true };
    const degraded = twHandoff ? '' : '; without the TIME_WAIT hand-off (this kernel refuses a sockmap update from tc)';
    const detail = `loads (${o.programNames().length} programs, ${o.mapNames().filter((n) => !n.includes('.')).length} maps)${degraded}${stale}`;
    o.close();
    return { ok: true, detail };
  } catch (e) {
    const lines = (e as Error).message.split('\n').filter((l) => l.trim() !== '');
    const last = lines.length > 1 ? ` — ${lines.at(-1)!.trim()}` : '';
    return { ok: false, detail: `load failed: ${lines[0]}${last}${stale}` };
  }
}

/** First line of `argv`'s version output; not ok when it is missing or fails. */
function version(argv: string[]): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: TOOL_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      const first = `${stdout}${stderr}`.trim().split('\n')[0] ?? '';
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        resolve({ ok: false, detail: code === 'ENOENT' ? `${argv[0]} not found` : `${argv.join(' ')} failed: ${first || err.message}` });
      } else resolve({ ok: true, detail: first });
    });
  });
}
