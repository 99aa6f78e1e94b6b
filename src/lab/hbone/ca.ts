// SPDX-License-Identifier: Apache-2.0
// The lab mesh's certificate authority: Debian's `openssl` CLI makes a root per run and
// issues SPIFFE workload certificates (URI SAN spiffe://<td>/ns/<ns>/sa/<sa>, critical,
// empty-ish subject, client and server auth), as Istio's CA does for ztunnel. Keys are
// EC P-256. Nothing here parses or writes X.509 itself.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

export interface IssuedCert { id: string; cert: string; key: string }

/** spiffe://<td>/ns/<ns>/sa/<sa> */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

const SPIFFE_RE = /^spiffe:\/\/[a-z0-9.-]+\/ns\/[a-z0-9.-]+\/sa\/[a-z0-9.-]+$/;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' } });
}

export class LabCa {
  readonly dir: string;
  readonly trustDomain: string;
  readonly certPem: string;
  #seq = 0;

  private constructor(dir: string, trustDomain: string, certPem: string) {
    this.dir = dir;
    this.trustDomain = trustDomain;
    this.certPem = certPem;
  }

  /** A new root in `dir` (created, mode 0700; the key never leaves it). */
  static create(dir: string, trustDomain = 'cluster.local', name = 'meshwarp lab root'): LabCa {
    if (!/^[a-z0-9.-]+$/.test(trustDomain)) throw new Error(`trust domain ${JSON.stringify(trustDomain)}: lowercase letters, digits, dots and dashes only`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt',
      '-days', '2', '-subj', `/O=${trustDomain}/CN=${name}`, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
    return new LabCa(dir, trustDomain, readFileSync(join(dir, 'ca.crt'), 'utf8'));
  }

  /** A workload certificate for `id` (a SPIFFE id of this trust domain), signed by this root. */
  issue(id: string): IssuedCert {
    if (!SPIFFE_RE.test(id)) throw new Error(`not a SPIFFE workload id: ${id}`);
    const n = ++this.#seq;
    const [key, csr, crt, ext] = ['key', 'csr', 'crt', 'ext'].map((s) => `leaf-${n}.${s}`);
    writeFileSync(join(this.dir, ext), `subjectAltName=critical,URI:${id}\nbasicConstraints=critical,CA:FALSE\n` +
      'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n', { mode: 0o600 });
    try {
      openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/O=${this.trustDomain}`], this.dir);
      openssl(['x509', '-req', '-in', csr, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
        '-days', '1', '-sha256', '-extfile', ext, '-out', crt], this.dir);
      return { id, cert: readFileSync(join(this.dir, crt), 'utf8'), key: readFileSync(join(this.dir, key), 'utf8') };
    } finally {
      for (const f of [key, csr, crt, ext]) rmSync(join(this.dir, f), { force: true });
    }
  }

  /** Removes the root's directory (key included). */
  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
