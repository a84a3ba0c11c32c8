// Recipe certs: /etc/certs/{root-cert,cert-chain,key}.pem owned by istio-proxy, the key readable by it alone.
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { defineRecipe } from '../engine/recipe.ts';
import { Directory } from '../resources/directory.ts';
import { File } from '../resources/file.ts';

const fromFiles = z.strictObject({
  from: z.literal('files'),
  /** Paths relative to the runlist (or absolute), read on the machine meshvm runs on. */
  rootCert: z.string(),
  certChain: z.string().optional(),
  key: z.string().optional(),
});

export const certs = defineRecipe({
  name: 'certs',
  description: 'Workload certificates in /etc/certs (the classic mesh-expansion flow).',
  attributes: z.strictObject({
    source: fromFiles,
    dir: z.string().default('/etc/certs'),
    proxyUser: z.string().default('istio-proxy'),
  }),
  async declare(a, { runlist }) {
    const read = async (file: string, what: string) => {
      const full = path.resolve(runlist.dir, file);
      const text = await fs.readFile(full, 'utf8').catch((error) => {
        throw new Error(`cannot read the ${what} ${full}: ${(error as NodeJS.ErrnoException).code ?? error}`);
      });
      if (!text.includes('-----BEGIN ')) throw new Error(`${full} is not PEM (no -----BEGIN line)`);
      return text;
    };
    const { source } = a;
    const owner = { owner: a.proxyUser, group: a.proxyUser };
    return [
      Directory({ path: a.dir, mode: 0o755, ...owner }),
      File({ path: `${a.dir}/root-cert.pem`, mode: 0o644, ...owner, content: await read(source.rootCert, 'root certificate') }),
      source.certChain === undefined ? undefined : File({ path: `${a.dir}/cert-chain.pem`, mode: 0o644, ...owner, content: await read(source.certChain, 'certificate chain') }),
      source.key === undefined ? undefined : File({ path: `${a.dir}/key.pem`, mode: 0o600, ...owner, sensitive: true, content: await read(source.key, 'private key') }),
    ];
  },
});
