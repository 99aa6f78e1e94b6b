// SPDX-License-Identifier: Apache-2.0
// Installs meshwarp-cni into the node's CNI configuration and takes it out again.
// The runtime uses the lexically first config file of the conf dir; we append our entry
// to it (converting a lone .conf into a .conflist), keep the bytes we replaced in a state
// file, and on uninstall put those exact bytes back when the file is still what we wrote.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, watch, type FSWatcher } from 'node:fs';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../sys/fs.ts';
import { DEFAULT_SOCKET, PLUGIN_TYPE, parseMeshwarpSettings, type MeshwarpSettings } from './config.ts';
import {
  candidateNames, confToConflist, conflistNameFor, extOf, isOurEntry, jsonEqual, ourEntry, parseConfFile, pluginEntry,
  serialize, unsupportedVersion, withEntry, withoutEntry, type JsonObject,
} from './conflist.ts';
import { CniError } from './errors.ts';
import { fromRoot } from '../paths.ts';

export const DEFAULT_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CONF_DIR = '/etc/cni/net.d';
export const DEFAULT_STATE_DIR = '/var/lib/meshwarp';
/** The binary name must equal the conflist entry's "type": the static forwarder (forward.c). */
export const PLUGIN_BINARY = PLUGIN_TYPE;
/** The full plugin (Node.js + src/cni) the forwarder execs when the agent cannot run the request. */
export const FULL_PLUGIN_BINARY = `${PLUGIN_TYPE}-node`;
/** Written by `make cni` next to the artifacts: `<sha256>  <name>` a line. */
export const CHECKSUM_FILE = 'SHA256SUMS';
const STATE_FILE = 'cni-install.json';
/** Node's compile cache for the plugin's TypeScript: halves the plugin's start-up (~100 → ~45 ms). */
const COMPILE_CACHE_DIR = 'cni-compile-cache';
const WRAPPER_MARK = '# meshwarp-cni: installed by `meshwarp cni install`';

export interface CniInstallOptions {
  binDir?: string;
  confDir?: string;
  stateDir?: string;
  /** Written into the conflist entry's "meshwarp" section (only the fields given). */
  settings?: Partial<MeshwarpSettings>;
  /** Node.js (>= 24) the wrapper execs; default: the project's .tools/node, else this process's node. */
  nodePath?: string;
  /** Where the built binaries and SHA256SUMS are (default: build/cni/linux-<arch> of the project). */
  artifactDir?: string;
  /**
   * What goes in as meshwarp-cni-node, the fallback of the forwarder: `sea`, the single executable
   * (self-contained: what a node needs when the installer runs in a container), or `wrapper`, a
   * /bin/sh script running this checkout's Node.js on src/cni/main.ts (default; labs and tests).
   */
  fullPlugin?: FullPlugin;
}

export type FullPlugin = 'sea' | 'wrapper';

export type InstallAction = 'inserted' | 'converted' | 'updated' | 'unchanged' | 'no-config' | 'unsupported' | 'conflict';

export interface InstallReport {
  plugin: string;
  action: InstallAction;
  /** The config file that carries (or would carry) our entry. */
  conflist?: string;
  message?: string;
  /** Files skipped because a runtime could not load them either. */
  skipped: { path: string; reason: string }[];
}

export interface UninstallReport {
  restored: string[];
  edited: string[];
  removed: string[];
}

/** One config file we changed: what it was before, so uninstall can put it back. */
interface FileRecord {
  path: string;
  originalPath: string;
  originalBase64: string;
  originalMode: number;
  writtenSha256: string;
}

interface InstallState {
  version: 1;
  binDir: string;
  confDir: string;
  plugin: string;
  entry: JsonObject;
  files: FileRecord[];
  /** The binaries we wrote into the bin dir and their sha256, so uninstall removes only those. */
  binaries?: { path: string; sha256: string }[];
}

interface Resolved {
  binDir: string;
  confDir: string;
  stateDir: string;
  entry: JsonObject;
  nodePath: string;
  artifactDir: string;
  fullPlugin: FullPlugin;
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

export function statePath(stateDir: string): string {
  return join(stateDir, STATE_FILE);
}

function readState(stateDir: string): InstallState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(stateDir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const s = JSON.parse(text) as InstallState;
  if (s.version !== 1 || !Array.isArray(s.files)) throw new Error(`${statePath(stateDir)}: unknown state format`);
  return s;
}

function writeState(stateDir: string, s: InstallState): void {
  const text = `${JSON.stringify(s, null, 2)}\n`;
  if (readMaybe(statePath(stateDir))?.toString('utf8') === text) return;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileAtomic(statePath(stateDir), text, 0o600);
}

export function resolveNode(explicit?: string): string {
  if (explicit) return explicit;
  const tools = fromRoot('.tools/node/bin/node');
  if (existsSync(tools)) return tools;
  if (Number(process.versions.node.split('.')[0]) >= 24) return process.execPath;
  throw new Error('no Node.js >= 24 found for the plugin wrapper: run `make setup` or pass --node');
}

const shq = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/** The executable placed in the CNI bin dir. A single-file build replaces it later. */
export function wrapperScript(nodePath: string, compileCacheDir: string): string {
  const main = fromRoot('src/cni/main.ts');
  return [
    '#!/bin/sh',
    `${WRAPPER_MARK} (do not edit; \`meshwarp cni uninstall\` removes it).`,
    '# Runs the chained CNI plugin with Node.js >= 24 (TypeScript type stripping).',
    '# The plugin needs neither TLS nor runtime-provided Node options; the compile cache',
    '# spares it from stripping types again on every pod start.',
    'unset NODE_OPTIONS NODE_EXTRA_CA_CERTS',
    `NODE_COMPILE_CACHE=${shq(compileCacheDir)}`,
    'export NODE_COMPILE_CACHE',
    `exec ${shq(nodePath)} --disable-warning=ExperimentalWarning ${shq(main)} "$@"`,
    '',
  ].join('\n');
}

function resolve(opts: CniInstallOptions): Resolved {
  // Socket and policy are always spelled out so the file says what the plugin will do.
  const settings: Partial<MeshwarpSettings> = { socket: DEFAULT_SOCKET, failurePolicy: 'closed', ...opts.settings };
  // Same validation as the plugin applies at ADD: an entry the plugin would refuse never reaches the file.
  try {
    parseMeshwarpSettings(pluginEntry(settings).meshwarp);
  } catch (e) {
    throw new Error(e instanceof CniError ? e.message : String(e));
  }
  return {
    binDir: opts.binDir ?? DEFAULT_BIN_DIR,
    confDir: opts.confDir ?? DEFAULT_CONF_DIR,
    stateDir: opts.stateDir ?? DEFAULT_STATE_DIR,
    entry: pluginEntry(settings),
    nodePath: opts.fullPlugin === 'sea' ? '' : resolveNode(opts.nodePath),
    artifactDir: opts.artifactDir ?? defaultArtifactDir(),
    fullPlugin: opts.fullPlugin ?? 'wrapper',
  };
}

/** Go's name of this machine's architecture, as the artifact directories are named. */
export function artifactArch(arch: string = process.arch): string {
  return arch === 'x64' ? 'amd64' : arch;
}

export function defaultArtifactDir(): string {
  return fromRoot('build/cni', `linux-${artifactArch()}`);
}

/** sha256 of a file, recomputed only when its size or mtime changed (the SEA is ~130 MB; watch re-checks every 10 s). */
const hashMemo = new Map<string, { size: number; mtimeMs: number; ino: number; sha: string }>();
function fileSha256(path: string): string | undefined {
  let st;
  try {
    st = statSync(path);
  } catch {
    return undefined;
  }
  const m = hashMemo.get(path);
  if (m && m.size === st.size && m.mtimeMs === st.mtimeMs && m.ino === st.ino) return m.sha;
  const sha = sha256(readFileSync(path));
  hashMemo.set(path, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha });
  return sha;
}

/** A built binary, after checking it against the SHA256SUMS the build wrote beside it. */
function artifact(dir: string, name: string): { path: string; sha256: string } {
  const path = join(dir, name);
  let sums: string;
  try {
    sums = readFileSync(join(dir, CHECKSUM_FILE), 'utf8');
  } catch {
    throw new Error(`${join(dir, CHECKSUM_FILE)} missing: build the CNI plugin first (\`make cni\`)`);
  }
  const want = sums.split('\n').map((l) => l.trim().split(/\s+\*?/)).find((f) => f[1] === name)?.[0];
  if (!want) throw new Error(`${join(dir, CHECKSUM_FILE)} has no line for ${name}: rebuild with \`make cni\``);
  const have = fileSha256(path);
  if (have === undefined) throw new Error(`${path} missing: build the CNI plugin first (\`make cni\`)`);
  if (have !== want) throw new Error(`${path}: sha256 ${have} does not match ${CHECKSUM_FILE} (${want}); refusing to install it`);
  return { path, sha256: want };
}

/**
 * Puts `bytes` (sha256 `want`) at `path` unless it is already there: temp file + fsync + rename,
 * so a runtime executing the plugin meanwhile runs the old or the new file, never half of one;
 * then reads it back and checks the checksum.
 */
function installBinary(path: string, want: string, bytes: () => Buffer): void {
  if (fileSha256(path) === want && (statSync(path).mode & 0o777) === 0o755) return;
  writeFileAtomic(path, bytes(), 0o755);
  hashMemo.delete(path);
  const got = fileSha256(path);
  if (got !== want) throw new Error(`${path}: wrote sha256 ${want} but read back ${got ?? 'nothing'}`);
}

function ensurePlugin(r: Resolved): { plugin: string; binaries: { path: string; sha256: string }[] } {
  mkdirSync(r.binDir, { recursive: true, mode: 0o755 });
  const fwd = artifact(r.artifactDir, PLUGIN_BINARY);
  const full = r.fullPlugin === 'sea' ? artifact(r.artifactDir, FULL_PLUGIN_BINARY) : undefined;
  const plugin = join(r.binDir, PLUGIN_BINARY);
  const fullPath = join(r.binDir, FULL_PLUGIN_BINARY);
  // The fallback first: a forwarder that is in place always finds the full plugin beside it.
  let fullSha: string;
  if (full) {
    installBinary(fullPath, full.sha256, () => readFileSync(full.path));
    fullSha = full.sha256;
  } else {
    const text = wrapperScript(r.nodePath, join(r.stateDir, COMPILE_CACHE_DIR));
    fullSha = sha256(text);
    installBinary(fullPath, fullSha, () => Buffer.from(text));
  }
  installBinary(plugin, fwd.sha256, () => readFileSync(fwd.path));
  return { plugin, binaries: [{ path: fullPath, sha256: fullSha }, { path: plugin, sha256: fwd.sha256 }] };
}

interface Target {
  name: string;
  path: string;
  bytes: Buffer;
  mode: number;
  parsed: Exclude<ReturnType<typeof parseConfFile>, { kind: 'invalid' }>;
}

/** The config file a runtime would load: the lexically first one it can parse. */
function findTarget(confDir: string, skipped: InstallReport['skipped']): Target | undefined {
  let names: string[];
  try {
    names = readdirSync(confDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  for (const name of candidateNames(names)) {
    const path = join(confDir, name);
    let bytes: Buffer;
    let mode: number;
    try {
      const st = statSync(path);
      if (!st.isFile()) continue;
      mode = st.mode & 0o7777;
      bytes = readFileSync(path);
    } catch {
      continue; // vanished between readdir and read
    }
    const parsed = parseConfFile(name, bytes.toString('utf8'));
    if (parsed.kind === 'invalid') {
      skipped.push({ path, reason: parsed.reason });
      continue;
    }
    return { name, path, bytes, mode, parsed };
  }
  return undefined;
}

function emptyState(r: Resolved, plugin: string): InstallState {
  return { version: 1, binDir: r.binDir, confDir: r.confDir, plugin, entry: r.entry, files: [] };
}

/** Re-reads the file just before replacing it so a concurrent rewrite by the primary CNI is not lost. */
function unchangedSince(t: Target): boolean {
  try {
    return readFileSync(t.path).equals(t.bytes);
  } catch {
    return false;
  }
}

/** One pass: make sure the plugin exists and the runtime's config file carries our entry. */
function reconcile(r: Resolved, attempt = 0): InstallReport {
  const { plugin, binaries } = ensurePlugin(r);
  const skipped: InstallReport['skipped'] = [];
  const state = readState(r.stateDir) ?? emptyState(r, plugin);
  state.binaries = binaries;
  state.binDir = r.binDir;
  state.confDir = r.confDir;
  state.plugin = plugin;
  state.entry = r.entry;
  state.files = state.files.filter((f) => existsSync(f.path) || existsSync(f.originalPath));
  const t = findTarget(r.confDir, skipped);
  if (!t) {
    writeState(r.stateDir, state);
    return { plugin, action: 'no-config', skipped, message: `no CNI network config in ${r.confDir} yet` };
  }
  const list = t.parsed.kind === 'conflist' ? t.parsed.obj : confToConflist(t.parsed.obj);
  const why = unsupportedVersion(list);
  if (why) {
    writeState(r.stateDir, state);
    return { plugin, action: 'unsupported', conflist: t.path, skipped, message: `not inserting into ${t.path}: ${why}` };
  }
  const existing = t.parsed.kind === 'conflist' ? ourEntry(list) : undefined;
  if (existing && jsonEqual(existing, r.entry) && (list.plugins as unknown[]).filter(isOurEntry).length === 1) {
    writeState(r.stateDir, state);
    return { plugin, action: 'unchanged', conflist: t.path, skipped };
  }
  const outPath = t.parsed.kind === 'conflist' ? t.path : join(r.confDir, conflistNameFor(t.name));
  const ours = state.files.find((f) => f.path === outPath);
  if (outPath !== t.path && existsSync(outPath) && !ours) {
    writeState(r.stateDir, state);
    return { plugin, action: 'conflict', conflist: t.path, skipped, message: `cannot convert ${t.path}: ${outPath} exists and is not ours` };
  }
  const text = serialize(withEntry(list, r.entry));
  let rec: FileRecord;
  if (existing && ours) {
    rec = { ...ours, writtenSha256: sha256(text) }; // only our settings changed: keep the original we saved
  } else if (existing) {
    // Our entry is there but we never recorded the file (state lost): nothing to restore later but the entry.
    rec = { path: outPath, originalPath: t.path, originalBase64: Buffer.from(serialize(withoutEntry(list))).toString('base64'), originalMode: t.mode, writtenSha256: sha256(text) };
  } else {
    rec = { path: outPath, originalPath: t.path, originalBase64: t.bytes.toString('base64'), originalMode: t.mode, writtenSha256: sha256(text) };
  }
  // Save the original bytes before touching the file: a crash in between must not lose them.
  state.files = [...state.files.filter((f) => f.path !== outPath), rec];
  writeState(r.stateDir, state);
  if (!unchangedSince(t)) {
    // The primary CNI is writing right now: start over on its new content.
    if (attempt < 5) return reconcile(r, attempt + 1);
    return { plugin, action: 'conflict', conflist: t.path, skipped, message: `${t.path} keeps changing; will retry` };
  }
  writeFileAtomic(outPath, text, t.mode);
  if (outPath !== t.path) unlinkSync(t.path);
  const action: InstallAction = existing ? 'updated' : outPath !== t.path ? 'converted' : 'inserted';
  return { plugin, action, conflist: outPath, skipped };
}

/** `meshwarp cni install`: writes the plugin wrapper and inserts the entry (idempotent). */
export function installCni(opts: CniInstallOptions = {}): InstallReport {
  return reconcile(resolve(opts));
}

function readMaybe(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * `meshwarp cni uninstall`: for every file we changed, puts the original bytes back when it is
 * still exactly what we wrote, else only drops our entry; removes our entry from any other
 * config file, the plugin wrapper and the state file.
 */
export function uninstallCni(opts: { binDir?: string; confDir?: string; stateDir?: string } = {}): UninstallReport {
  const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
  const state = readState(stateDir);
  const confDir = opts.confDir ?? state?.confDir ?? DEFAULT_CONF_DIR;
  const binDir = opts.binDir ?? state?.binDir ?? DEFAULT_BIN_DIR;
  const report: UninstallReport = { restored: [], edited: [], removed: [] };
  const done = new Set<string>();
  for (const f of state?.files ?? []) {
    const cur = readMaybe(f.path);
    if (!cur) continue;
    done.add(f.path);
    if (sha256(cur) === f.writtenSha256) {
      const converted = f.originalPath !== f.path;
      // A converted .conf the primary has since written again is newer than our copy: keep it.
      if (!converted || !existsSync(f.originalPath)) {
        writeFileAtomic(f.originalPath, Buffer.from(f.originalBase64, 'base64'), f.originalMode);
        report.restored.push(f.originalPath);
      }
      if (converted) {
        unlinkSync(f.path);
        report.removed.push(f.path);
      }
    } else if (dropEntry(f.path, cur)) {
      report.edited.push(f.path);
    }
  }
  let names: string[] = [];
  try {
    names = readdirSync(confDir);
  } catch { /* no conf dir: nothing to clean */ }
  for (const name of candidateNames(names)) {
    const path = join(confDir, name);
    if (done.has(path)) continue;
    const cur = readMaybe(path);
    if (cur && dropEntry(path, cur)) report.edited.push(path);
  }
  // Only what we wrote: a binary with the checksum we recorded, or one carrying our marker
  // (the wrapper's comment line; the forwarder holds the same string), when the state is lost.
  const recorded = new Map((state?.binaries ?? []).map((b) => [b.path, b.sha256]));
  for (const path of [join(binDir, FULL_PLUGIN_BINARY), join(binDir, PLUGIN_BINARY)]) {
    const cur = readMaybe(path);
    if (!cur) continue;
    if (recorded.get(path) === sha256(cur) || cur.includes(WRAPPER_MARK)) {
      unlinkSync(path);
      hashMemo.delete(path);
      report.removed.push(path);
    }
  }
  rmSync(join(stateDir, COMPILE_CACHE_DIR), { recursive: true, force: true });
  if (state) unlinkSync(statePath(stateDir));
  return report;
}

/** Removes our entry from a conflist the primary CNI rewrote; false when it carries none. */
function dropEntry(path: string, cur: Buffer): boolean {
  if (extOf(path) !== '.conflist') return false;
  const p = parseConfFile(basename(path), cur.toString('utf8'));
  if (p.kind !== 'conflist' || !(p.obj.plugins as unknown[]).some(isOurEntry)) return false;
  writeFileAtomic(path, serialize(withoutEntry(p.obj)), statSync(path).mode & 0o7777);
  return true;
}

export interface WatchOptions extends CniInstallOptions {
  /** Quiet time after the last change before acting (the primary may write in several steps). */
  debounceMs?: number;
  /** Full re-check period, in case an fs event was missed. */
  resyncMs?: number;
  onEvent?: (e: InstallReport | { action: 'error'; message: string }) => void;
}

/**
 * Keeps our entry in the runtime's config file until `signal` aborts: re-inserts it when the
 * primary CNI rewrites the file, follows a new file that sorts first. Leaves everything
 * installed on exit (an agent restart must not change pod networking); uninstall is explicit.
 */
export async function watchConflist(opts: WatchOptions, signal: AbortSignal): Promise<void> {
  const r = resolve(opts);
  const debounceMs = opts.debounceMs ?? 100;
  const resyncMs = opts.resyncMs ?? 10_000;
  const emit = opts.onEvent ?? (() => {});
  mkdirSync(r.confDir, { recursive: true, mode: 0o755 });
  const pass = (): void => {
    try {
      const rep = reconcile(r);
      if (rep.action !== 'unchanged') emit(rep);
    } catch (e) {
      emit({ action: 'error', message: e instanceof Error ? e.message : String(e) });
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const kick = (): void => {
    clearTimeout(timer);
    timer = setTimeout(pass, debounceMs);
  };
  let watcher: FSWatcher | undefined;
  const startWatcher = (): void => {
    try {
      watcher = watch(r.confDir, { persistent: true }, kick);
      watcher.on('error', () => {
        watcher?.close();
        watcher = undefined; // the resync tick restarts it (e.g. conf dir removed and recreated)
      });
    } catch {
      watcher = undefined;
    }
  };
  // Watch first, then look: a change made between the two is seen by the watcher.
  startWatcher();
  pass();
  const resync = setInterval(() => {
    if (!watcher) {
      try { mkdirSync(r.confDir, { recursive: true, mode: 0o755 }); } catch { /* reported by pass */ }
      startWatcher();
    }
    pass();
  }, resyncMs);
  await new Promise<void>((done) => {
    const stop = (): void => {
      clearTimeout(timer);
      clearInterval(resync);
      watcher?.close();
      done();
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
}

/**
 * Readiness of the chained entry (the agent's /readyz): undefined when the config file the
 * runtime loads from `confDir` is a conflist carrying exactly one meshwarp-cni entry the
 * plugin accepts, pointing at `socket` when given; else what is wrong. Reads only.
 */
export function entryProblem(confDir: string, socket?: string): string | undefined {
  const t = findTarget(confDir, []);
  if (!t) return `no CNI network config in ${confDir}`;
  if (t.parsed.kind !== 'conflist') return `${t.path} is a single-plugin config without the meshwarp-cni entry`;
  const ours = (t.parsed.obj.plugins as unknown[]).filter(isOurEntry) as JsonObject[];
  if (ours.length !== 1) return `${t.path} has ${ours.length} meshwarp-cni entries (want 1)`;
  let s: MeshwarpSettings;
  try {
    s = parseMeshwarpSettings(ours[0].meshwarp);
  } catch (e) {
    return `${t.path}: the meshwarp-cni entry is invalid: ${(e as Error).message}`;
  }
  if (socket !== undefined && s.socket !== socket) return `${t.path}: the meshwarp-cni entry points at ${s.socket}, this agent listens on ${socket}`;
  return undefined;
}
