// SPDX-License-Identifier: Apache-2.0
// Pure edits of CNI network configuration files: find the file the runtime uses, turn a
// single-plugin .conf into a .conflist, add or remove our entry. No I/O here.
import { PLUGIN_TYPE, SUPPORTED_VERSIONS, type MeshwarpSettings } from './config.ts';

/** Extensions runtimes load (libcni ConfFiles as used by containerd and CRI-O). */
export const CONF_EXTS: readonly string[] = ['.conf', '.conflist', '.json'];

export type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function extOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot <= 0 ? '' : name.slice(dot);
}

/** Config file names in the order runtimes consider them: byte-wise lexical, like Go's sort.Strings. */
export function candidateNames(names: readonly string[]): string[] {
  return names.filter((n) => CONF_EXTS.includes(extOf(n))).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export type ParsedConf =
  | { kind: 'conflist'; obj: JsonObject }
  | { kind: 'conf'; obj: JsonObject }
  | { kind: 'invalid'; reason: string };

/** Parses a file the way a runtime would read it: .conflist needs `plugins`, .conf/.json need `type`. */
export function parseConfFile(name: string, text: string): ParsedConf {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { kind: 'invalid', reason: `invalid JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!isObject(v)) return { kind: 'invalid', reason: 'not a JSON object' };
  if (extOf(name) === '.conflist') {
    if (!Array.isArray(v.plugins) || v.plugins.length === 0 || !v.plugins.every(isObject)) return { kind: 'invalid', reason: 'conflist without a "plugins" list' };
    return { kind: 'conflist', obj: v };
  }
  if (typeof v.type !== 'string') return { kind: 'invalid', reason: 'network config without "type"' };
  return { kind: 'conf', obj: v };
}

/** Why our plugin could not run in this chain, or undefined when it can (its versions are ones we speak). */
export function unsupportedVersion(list: JsonObject): string | undefined {
  const versions: unknown[] = Array.isArray(list.cniVersions) ? list.cniVersions : [list.cniVersion];
  const bad = versions.filter((v) => typeof v !== 'string' || !SUPPORTED_VERSIONS.includes(v));
  if (bad.length === 0) return undefined;
  return `the chain speaks CNI ${bad.map((v) => JSON.stringify(v)).join(', ')}; meshwarp-cni supports ${SUPPORTED_VERSIONS.join(', ')}`;
}

/** The single-plugin form wrapped as a list: {cniVersion, name, plugins: [rest]}. */
export function confToConflist(conf: JsonObject): JsonObject {
  const { cniVersion, name, ...rest } = conf;
  return { cniVersion, name, plugins: [rest] };
}

export function conflistNameFor(name: string): string {
  return `${name.slice(0, name.length - extOf(name).length)}.conflist`;
}

export function pluginEntry(settings: Partial<MeshwarpSettings>): JsonObject {
  const m: JsonObject = {};
  if (settings.socket !== undefined) m.socket = settings.socket;
  if (settings.failurePolicy !== undefined) m.failurePolicy = settings.failurePolicy;
  if (settings.excludeNamespaces !== undefined) m.excludeNamespaces = [...settings.excludeNamespaces];
  if (settings.timeoutMs !== undefined) m.timeoutMs = settings.timeoutMs;
  if (settings.dataplane !== undefined) m.dataplane = settings.dataplane;
  return { type: PLUGIN_TYPE, meshwarp: m };
}

export function isOurEntry(p: unknown): boolean {
  return isObject(p) && p.type === PLUGIN_TYPE;
}

export function ourEntry(list: JsonObject): JsonObject | undefined {
  return (list.plugins as unknown[]).find(isOurEntry) as JsonObject | undefined;
}

/** Appends our entry, or replaces the one already there in place (never two). */
export function withEntry(list: JsonObject, entry: JsonObject): JsonObject {
  const plugins = list.plugins as unknown[];
  const i = plugins.findIndex(isOurEntry);
  const next = i < 0 ? [...plugins, entry] : plugins.map((p, j) => (j === i ? entry : p)).filter((p, j) => j === i || !isOurEntry(p));
  return { ...list, plugins: next };
}

export function withoutEntry(list: JsonObject): JsonObject {
  return { ...list, plugins: (list.plugins as unknown[]).filter((p) => !isOurEntry(p)) };
}

/** How we write files: 2-space JSON and a trailing newline. */
export function serialize(obj: JsonObject): string {
  return `${JSON.stringify(obj, null, 2)}\n`;
}

/** Structural equality of JSON values (key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (!isObject(a) || !isObject(b)) return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
}
