import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface Certificate {
  /** The folder holding both files; remove it when done. */
  dir: string;
  cert: string;
  key: string;
}

/**
 * A self-signed certificate made with openssl, valid for a day, for
 * `localhost` and 127.0.0.1 unless another common name is given (P-256
 * keys: quick to make).
 */
export function makeCertificate(commonName = 'localhost', dir?: string): Certificate {
  const into = dir ?? mkdtempSync(path.join(tmpdir(), 'confab-tls-'));
  const cert = path.join(into, `${commonName}.crt`);
  const key = path.join(into, `${commonName}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      `/CN=${commonName}`,
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  return { dir: into, cert, key };
}
