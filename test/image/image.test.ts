// SPDX-License-Identifier: Apache-2.0
// The OCI image `make image` builds (build/image/oci), run in Debian's podman as the chart's
// DaemonSet runs it (deploy/helm/meshwarp): the `cni` container installs the plugin into a lab
// node's CNI dirs, the `agent` container runs in the node's network namespace (the node's
// "host network") with the chart's capabilities and mounts; a pod made by the real chain
// (bridge + host-local + meshwarp-cni) is meshed, its connect is captured, and `meshwarp status`
// and `meshwarp pods` inside the container report it. The image is copied into podman's
// storage under a test-only name and removed afterwards, with the containers.
//   make image-test   (builds the image first)
// Machine notes: crun refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"),
// so the test runs podman with runc; podman's default RLIMIT_NOFILE (1048576) is above this
// machine's hard limit without CAP_SYS_RESOURCE, so the limits are passed explicitly.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentRequest } from '../../src/agent/client.ts';
import { DEBIAN_CNI_DIR, Lab, labPinRoot, labRunDir, uniquePrefix, waitForLine } from '../../src/lab/index.ts';
import { inCI, kernelTest } from '../helpers/kernel.ts';
import { waitUntil } from '../helpers/poll.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LAYOUT = join(ROOT, 'build/image/oci');
const VERSION = /appVersion: *"?([^"\n]+)"?/.exec(readFileSync(join(ROOT, 'deploy/helm/meshwarp/Chart.yaml'), 'utf8'))![1];
const CHART_REPO = /repository: *(\S+)/.exec(readFileSync(join(ROOT, 'deploy/helm/meshwarp/values.yaml'), 'utf8'))![1];
/** The chart's capabilities (templates/daemonset.yaml, privileged=false). */
const CHART_CAPS = ['BPF', 'PERFMON', 'NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE', 'DAC_OVERRIDE', 'SYS_RESOURCE'];
const CAP_BITS: Record<string, number> = { DAC_OVERRIDE: 1, NET_ADMIN: 12, NET_RAW: 13, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, PERFMON: 38, BPF: 39 };
const SERVICE = '10.96.0.10';
const APP_UID = 1000;

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

function limit(name: string): string {
  const l = readFileSync('/proc/self/limits', 'utf8').split('\n').find((x) => x.startsWith(name))!;
  return l.slice(name.length).trim().split(/\s+/)[1];
}

/** The capabilities of the chart this machine can grant (podman refuses one outside its bounding set). */
function grantable(): { caps: string[]; missing: string[] } {
  const bnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
  const ok = (c: string) => ((bnd >> BigInt(CAP_BITS[c])) & 1n) === 1n;
  return { caps: CHART_CAPS.filter(ok), missing: CHART_CAPS.filter((c) => !ok(c)) };
}

/** Removes `rel` (and what is below it) from every mounted cgroup hierarchy, v1 and v2. */
function removeCgroupEverywhere(rel: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => f.length > 4 && / - cgroup2? /.test(f.join(' '))).map((f) => f[4]);
  for (const m of mounts) {
    const top = join(m, rel);
    if (!existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string) => { dirs.push(d); for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name)); };
    walk(top);
    for (const d of dirs.reverse()) rmdirSync(d);
  }
}

kernelTest('the image runs as the chart\'s DaemonSet: cni installs the plugin, the agent meshes a CNI-made lab pod, meshwarp status in the container reports it', async (t) => {
  const tools = ['podman', 'skopeo', 'runc'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
  const missing = [...tools, ...(existsSync(join(LAYOUT, 'index.json')) ? [] : ['build/image/oci (make image)']),
    ...(existsSync(join(DEBIAN_CNI_DIR, 'bridge')) ? [] : ['containernetworking-plugins'])];
  if (missing.length) {
    if (inCI) throw new Error(`missing: ${missing.join(', ')}`);
    t.skip(`missing: ${missing.join(', ')}`);
    return;
  }
  const prefix = uniquePrefix('im');
  const image = `localhost/meshwarp-image-test:${prefix}`;
  const names = { cni: `${prefix}-cni`, agent: `${prefix}-agent` };
  // podman's cgroupfs manager makes /libpod_parent in every hierarchy and never removes it:
  // give the containers a parent of this run's own, removed below.
  const cgroupParent = `/${prefix}-podman`;
  const podman = (args: string[], input?: string) => sh('podman', ['--runtime', 'runc', ...args], input);
  const runArgs = (args: string[]) => ['run', '--cgroup-parent', cgroupParent, ...args];
  const rlimits = ['--ulimit', `nofile=${limit('Max open files')}:${limit('Max open files')}`, '--ulimit', 'nproc=10000:10000'];

  const lab = await Lab.create({ prefix });
  t.after(async () => {
    spawnSync('podman', ['rm', '-f', '-t', '0', names.agent, names.cni], { stdio: 'ignore' });
    await lab.destroy();
    spawnSync('podman', ['rmi', '-f', image], { stdio: 'ignore' });
    removeCgroupEverywhere(cgroupParent);
  });

  // The reference make image tags is the chart's default one.
  const index = JSON.parse(readFileSync(join(LAYOUT, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === VERSION);
  assert.ok(m, `build/image/oci has ${CHART_REPO}:${VERSION} (the chart's default image)`);
  assert.equal(CHART_REPO, 'ghcr.io/meshwarp/meshwarp');
  sh('skopeo', ['copy', '-q', `oci:${LAYOUT}:${VERSION}`, `containers-storage:${image}`]);

  // No shell in the default image.
  const noSh = spawnSync('podman', ['--runtime', 'runc', ...runArgs(['--rm', '--network', 'none', ...rlimits, '--entrypoint', '/bin/sh', image, '-c', 'true'])], { encoding: 'utf8' });
  assert.notEqual(noSh.status, 0, 'no /bin/sh');

  const n1 = lab.addNode('node1');
  const run = `${labRunDir(prefix)}/node1`;
  const socket = `${run}/agent.sock`;
  const state = `${run}/state`;
  mkdirSync(state, { recursive: true, mode: 0o700 });
  // The lab's runtime side: a bridge + host-local conflist (and our entry, by the host's installer).
  lab.enableCni(n1, { agentSocket: socket, failurePolicy: 'closed' });
  const cni = n1.cni!;

  // cni container (the chart's: DAC_OVERRIDE only, CNI dirs under /host, state dir), `install` for `watch`.
  podman(runArgs(['--rm', '--name', names.cni, '--network', 'none', ...rlimits, '--cap-drop', 'all', '--cap-add', 'DAC_OVERRIDE',
    '-v', `${cni.binDir}:/host/opt/cni/bin`, '-v', `${cni.confDir}:/host/etc/cni/net.d`, '-v', `${state}:/var/lib/meshwarp`,
    image, 'cni', 'install', '--cni-bin-dir=/host/opt/cni/bin', '--cni-conf-dir=/host/etc/cni/net.d', '--failure-policy=closed',
    '--exclude-namespaces=kube-system', '--full-plugin=sea', `--socket=${socket}`]));
  const sums = readFileSync(join(ROOT, 'build/cni/linux-amd64/SHA256SUMS'), 'utf8');
  for (const f of ['meshwarp-cni', 'meshwarp-cni-node']) {
    const sha = createHash('sha256').update(readFileSync(join(cni.binDir, f))).digest('hex');
    assert.ok(sums.includes(`${sha}  ${f}`), `${f} in the bin dir is the image's (SHA256SUMS)`);
  }

  // agent container: the node's network namespace, the chart's capabilities, seccomp as a pod
  // without seccompProfile, the chart's mounts (the run dir at the same path inside and out).
  const { caps, missing: notHere } = grantable();
  if (notHere.length) t.diagnostic(`capabilities this machine cannot grant (not in its bounding set): ${notHere.join(', ')}`);
  podman(runArgs(['-d', '--name', names.agent, '--network', `ns:${n1.netnsPath}`, ...rlimits,
    '--cap-drop', 'all', ...caps.flatMap((c) => ['--cap-add', c]), '--security-opt', 'seccomp=unconfined',
    '-v', '/sys/fs/bpf:/sys/fs/bpf:rslave', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:ro', '-v', '/proc:/host/proc:ro',
    '-v', '/run/netns:/host/var/run/netns:rslave', '-v', '/run/netns:/var/run/netns:rslave',
    '-v', `${cni.binDir}:/host/opt/cni/bin`, '-v', `${cni.confDir}:/host/etc/cni/net.d`,
    '-v', `${run}:${run}`, '-v', `${state}:/var/lib/meshwarp`,
    image, 'agent', '--engine', 'ebpf', '--profile', 'osm', '--cgroup', n1.cgroupPath, '--pin-root', `${labPinRoot(prefix)}/node1`,
    '--socket', socket, '--state-dir', '/var/lib/meshwarp', '--node-ip', n1.ip4, '--node-ip', n1.ip6, '--metrics', '127.0.0.1:9464',
    '--cni-conf-dir=/host/etc/cni/net.d', '--host-proc=/host/proc', '--netns-dir=/host/var/run/netns']));
  const logs = () => spawnSync('podman', ['logs', names.agent], { encoding: 'utf8' });
  try {
    await waitUntil('the agent in the container serving its socket', async () => {
      try { await agentRequest('GET', '/v1/status', undefined, socket); return true; } catch { return false; }
    }, 60_000);
  } catch (e) {
    const l = logs();
    throw new Error(`${(e as Error).message}\n${l.stdout}${l.stderr}`);
  }

  const pod = await lab.addPodCni(n1, 'web', { namespace: 'demo' });
  const status = JSON.parse(podman(['exec', names.agent, 'meshwarp', 'status', '--json', '--socket', socket])) as { pods: number; engine: string };
  assert.equal(status.pods, 1, 'meshwarp status in the container: 1 pod');
  const pods = JSON.parse(podman(['exec', names.agent, 'meshwarp', 'pods', '--json', '--socket', socket])) as { podNamespace: string; podName: string; ip4: string }[] | { pods: { podNamespace: string; podName: string; ip4: string }[] };
  const list = Array.isArray(pods) ? pods : pods.pods;
  assert.deepEqual(list.map((p) => `${p.podNamespace}/${p.podName} ${p.ip4}`), [`demo/web ${pod.ip4}`]);
  const text = podman(['exec', names.agent, 'meshwarp', 'status', '--socket', socket]);
  t.diagnostic(`meshwarp status (in the container):\n${text}`);

  // The pod's connect to a service address lands on its sidecar port: the redirection is live.
  const listener = pod.spawn([process.execPath, '-e', "require('net').createServer((s)=>s.end('sidecar\\n')).listen(15001,'127.0.0.1',()=>console.log('ready'))"]);
  await waitForLine(listener, /ready/);
  const r = await pod.run([process.execPath, '-e', `const s=require('net').connect({host:'${SERVICE}',port:8080,timeout:3000});s.on('data',(d)=>{process.stdout.write(d);process.exit(0)});s.on('error',(e)=>{console.log(e.message);process.exit(1)});s.on('timeout',()=>{console.log('timeout');process.exit(1)})`], { uid: APP_UID });
  assert.equal(r.stdout.trim(), 'sidecar', `captured: ${r.stdout}${r.stderr}`);

  // DEL through the chain unmeshes it; the agent removes what it made on uninstall.
  await lab.removePodCni(pod);
  const after = JSON.parse(podman(['exec', names.agent, 'meshwarp', 'status', '--json', '--socket', socket])) as { pods: number };
  assert.equal(after.pods, 0, 'CNI DEL through the chain unmeshed it');
  // The agent exits once it has removed everything, taking the container (and the exec) with it.
  const u = spawnSync('podman', ['--runtime', 'runc', 'exec', names.agent, 'meshwarp', 'uninstall', '--socket', socket], { encoding: 'utf8' });
  assert.match(u.stdout, /uninstalled through the running agent/, u.stderr);
}, { timeout: 240_000 });
