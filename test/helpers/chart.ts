// SPDX-License-Identifier: Apache-2.0
// The Helm chart in tests: render with the pinned helm, split the manifests,
// send them to a test API server (YAML as it is: the API server parses it),
// and make kubeconform schemas from that API server's own OpenAPI document
// (kubeconform cannot download schemas here, and these match the server).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { KubeClient } from '../../src/k8s/client.ts';
import { kubeBinDir } from './kube.ts';

export const CHART = resolve(import.meta.dirname, '../../deploy/helm/meshwarp');

/** The test API server's version: helm built by `go install` defaults to v1.20 (its ldflags are not set). */
export const KUBE_VERSION = 'v1.37.2';

export function helm(args: string[]): string {
  return execFileSync(join(kubeBinDir(), 'helm'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HELM_CACHE_HOME: '/tmp/mw-helm-cache', HELM_CONFIG_HOME: '/tmp/mw-helm-config', HELM_DATA_HOME: '/tmp/mw-helm-data' } });
}

/** `helm template` of the chart as release `release` in `namespace`, with --set pairs. */
export function renderChart(release: string, namespace: string, set: string[] = []): string {
  return helm(['template', release, CHART, '--namespace', namespace, '--kube-version', KUBE_VERSION, ...set.flatMap((s) => ['--set', s])]);
}

export interface Manifest { kind: string; apiVersion: string; name: string; namespace?: string; yaml: string }

/** Top-level kind/apiVersion/metadata of each document (our chart's own layout: enough to route it). */
export function splitManifests(yaml: string): Manifest[] {
  return yaml.split(/^---\s*$/m).map((d) => d.trim()).filter((d) => /^kind:/m.test(d)).map((d) => {
    const top = (k: string) => d.match(new RegExp(`^${k}:\\s*(\\S+)\\s*$`, 'm'))?.[1];
    const meta = d.slice(d.search(/^metadata:/m)).split('\n').slice(1);
    const field = (k: string) => meta.find((l) => new RegExp(`^  ${k}:`).test(l))?.split(':')[1].trim();
    return { kind: top('kind')!, apiVersion: top('apiVersion')!, name: field('name')!, namespace: field('namespace'), yaml: d };
  });
}

const PLURAL: Record<string, string> = { ServiceAccount: 'serviceaccounts', ClusterRole: 'clusterroles', ClusterRoleBinding: 'clusterrolebindings', DaemonSet: 'daemonsets', Role: 'roles', RoleBinding: 'rolebindings' };

export function collectionPath(m: Manifest): string {
  const base = m.apiVersion.includes('/') ? `/apis/${m.apiVersion}` : `/api/${m.apiVersion}`;
  const plural = PLURAL[m.kind];
  if (!plural) throw new Error(`no resource path known for kind ${m.kind}`);
  return m.namespace ? `${base}/namespaces/${m.namespace}/${plural}` : `${base}/${plural}`;
}

/** Creates (or with dryRun, validates server-side) each manifest; returns the objects the server answered. */
export async function applyManifests(c: KubeClient, ms: Manifest[], dryRun: boolean): Promise<any[]> {
  const out: any[] = [];
  for (const m of ms) out.push(await c.request('POST', `${collectionPath(m)}${dryRun ? '?dryRun=All&fieldValidation=Strict' : '?fieldValidation=Strict'}`, m.yaml as unknown, 'application/yaml'));
  return out;
}

/**
 * kubeconform schemas (strict: unknown fields refused) for `kinds`, from the
 * API server's /openapi/v2: one file per kind, `{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}`.
 */
export async function writeSchemas(c: KubeClient, dir: string, kinds: readonly string[]): Promise<string> {
  const doc = await c.request('GET', '/openapi/v2');
  const defs: Record<string, any> = doc.definitions;
  const fix = (s: any): any => {
    if (Array.isArray(s)) return s.map(fix);
    if (!s || typeof s !== 'object') return s;
    const o: any = {};
    for (const [k, v] of Object.entries(s)) o[k] = fix(v);
    if (o.format === 'int-or-string') return { oneOf: [{ type: 'string' }, { type: 'integer' }], description: o.description };
    if (o.type === 'object' && o.properties && !o['x-kubernetes-preserve-unknown-fields']) o.additionalProperties ??= false;
    return o;
  };
  const fixed: Record<string, any> = {};
  for (const [name, d] of Object.entries(defs)) fixed[name] = fix(d);
  fixed['io.k8s.apimachinery.pkg.api.resource.Quantity'] = { oneOf: [{ type: 'string' }, { type: 'number' }] };
  mkdirSync(dir, { recursive: true });
  for (const [name, d] of Object.entries(fixed)) {
    for (const gvk of (d['x-kubernetes-group-version-kind'] ?? []) as { group: string; version: string; kind: string }[]) {
      if (!kinds.includes(gvk.kind)) continue;
      const file = `${gvk.kind.toLowerCase()}${gvk.group ? `-${gvk.group.split('.')[0]}` : ''}-${gvk.version}.json`;
      writeFileSync(join(dir, file), JSON.stringify({ definitions: fixed, $ref: `#/definitions/${name}` }));
    }
  }
  return join(dir, '{{ .ResourceKind }}{{ .KindSuffix }}.json');
}

/** kubeconform over `yaml` with the schemas of writeSchemas; throws with its output on a failure. */
export function kubeconform(yaml: string, schemaLocation: string): string {
  try {
    return execFileSync(join(kubeBinDir(), 'kubeconform'), ['-strict', '-summary', '-schema-location', schemaLocation, '-'], { input: yaml, encoding: 'utf8' });
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string };
    throw new Error(`kubeconform: ${x.stdout ?? ''}${x.stderr ?? ''}`);
  }
}
