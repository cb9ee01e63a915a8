/**
 * A throwaway self-signed TLS certificate for 127.0.0.1, made at run time with the `openssl` CLI (Node can sign
 * with a key but cannot issue an X.509 certificate). For servers that need HTTPS in tests, e.g. Azurite in OAuth
 * mode. Nothing is trusted globally: a client trusts it by being given `certificatePem` as its CA (the Azure SDKs'
 * `tlsOptions: { ca }`, or NODE_EXTRA_CA_CERTS=`certificatePath` in a child process's environment).
 * Shared by tests and local tooling, so it must not import node:test.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface LoopbackCertificate {
  /** PEM file of the certificate; it is its own CA. */
  certificatePath: string;
  /** PEM file of the unencrypted private key. */
  keyPath: string;
  certificatePem: string;
  /** Deletes the temporary folder holding both files. */
  remove(): Promise<void>;
}

const run = promisify(execFile);

export async function createLoopbackCertificate(options: { validDays?: number } = {}): Promise<LoopbackCertificate> {
  const folder = await mkdtemp(join(tmpdir(), 'loopback-tls-'));
  const certificatePath = join(folder, 'cert.pem');
  const keyPath = join(folder, 'key.pem');
  try {
    // TLS clients match the address against the subjectAltName (the CN is ignored), so it must name IP 127.0.0.1.
    await run(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyPath,
        '-out',
        certificatePath,
        '-days',
        String(options.validDays ?? 1),
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { timeout: 10_000, windowsHide: true },
    );
  } catch (error) {
    await rm(folder, { recursive: true, force: true });
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'openssl is not on PATH' : String(error);
    throw new Error(`Could not create a loopback TLS certificate: ${reason}`, { cause: error });
  }
  return {
    certificatePath,
    keyPath,
    certificatePem: await readFile(certificatePath, 'utf8'),
    remove: () => rm(folder, { recursive: true, force: true }),
  };
}
