import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface Certificate {
  /** The folder holding both files; remove it when done. */
  dir: string;
  cert: string;
  key: string;
}

/** A new P-256 key, unencrypted (quick to make). */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

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
      ...NEW_KEY,
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

/**
 * A self-signed certificate for `localhost` valid only between `start` and `end`
 * (YYYYMMDDHHMMSSZ), in the past or the future: `openssl req` takes no such dates, `openssl
 * ca` does, given a database of its own in the folder.
 */
export function makeDatedCertificate(start: string, end: string): Certificate {
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-tls-'));
  const at = (name: string) => path.join(dir, name);
  writeFileSync(at('index.txt'), '');
  writeFileSync(at('serial'), '01\n');
  writeFileSync(
    at('ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${at('index.txt')}\nnew_certs_dir = ${dir}\ndefault_md = sha256\npolicy = p\nserial = ${at('serial')}\n[p]\ncommonName = supplied\n`,
  );
  execFileSync(
    'openssl',
    [
      'req',
      '-new',
      ...NEW_KEY,
      '-keyout',
      at('localhost.key'),
      '-out',
      at('request.csr'),
      '-subj',
      '/CN=localhost',
    ],
    { stdio: 'ignore' },
  );
  execFileSync(
    'openssl',
    [
      'ca',
      '-batch',
      '-config',
      at('ca.cnf'),
      '-selfsign',
      '-keyfile',
      at('localhost.key'),
      '-in',
      at('request.csr'),
      '-out',
      at('localhost.crt'),
      '-startdate',
      start,
      '-enddate',
      end,
      '-notext',
    ],
    { stdio: 'ignore' },
  );
  return { dir, cert: at('localhost.crt'), key: at('localhost.key') };
}
