// A tiny OCI image archive built without a registry or a daemon: a rootfs of this machine's dash and libc plus files given,
// as one layer; its manifest digest is known before any engine sees it (what a reference pins).
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** The shared libraries a binary loads (ldd), as absolute paths. */
async function libraries(binary: string): Promise<string[]> {
  const { stdout } = await execa('ldd', [binary]);
  return [...stdout.matchAll(/(\/[^\s]+)/g)].map((m) => m[1]!).filter((p) => p !== binary);
}

/**
 * Writes an oci-archive (OCI image layout in a tar) of `name:tag` to `archive`: /bin/sh (this machine's dash and the
 * libraries it loads) and `files` (path → [content, mode]). Returns the manifest digest: `${name}@${digest}` names it.
 */
export async function buildOciArchive(workDir: string, archive: string, ref: string, files: Record<string, [string, number]>): Promise<string> {
  const rootfs = path.join(workDir, 'rootfs');
  const layout = path.join(workDir, 'layout');
  await fs.rm(workDir, { recursive: true, force: true });
  await fs.mkdir(path.join(rootfs, 'bin'), { recursive: true });
  await fs.copyFile('/bin/dash', path.join(rootfs, 'bin/sh'));
  for (const lib of await libraries('/bin/dash')) {
    await fs.mkdir(path.join(rootfs, path.dirname(lib)), { recursive: true });
    await fs.copyFile(lib, path.join(rootfs, lib));
  }
  for (const [file, [content, mode]] of Object.entries(files)) {
    await fs.mkdir(path.join(rootfs, path.dirname(file)), { recursive: true });
    await fs.writeFile(path.join(rootfs, file), content, { mode });
  }
  const blobs = path.join(layout, 'blobs/sha256');
  await fs.mkdir(blobs, { recursive: true });
  const blob = async (data: Buffer | string) => {
    const digest = sha256(data);
    await fs.writeFile(path.join(blobs, digest), data);
    return { digest: `sha256:${digest}`, size: Buffer.byteLength(data) };
  };
  // one uncompressed layer, reproducible: sorted names, fixed owner and time
  const layer = (
    await execa('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-c', '.'], { encoding: 'buffer' })
  ).stdout as unknown as Buffer;
  const layerBlob = await blob(layer);
  const config = await blob(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layerBlob.digest] } }));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layerBlob }],
  });
  const manifestBlob = await blob(manifest);
  await fs.writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await fs.writeFile(
    path.join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifestBlob, annotations: { 'org.opencontainers.image.ref.name': ref } }],
    }),
  );
  await fs.mkdir(path.dirname(archive), { recursive: true });
  await execa('tar', ['-C', layout, '-cf', archive, '.']);
  return manifestBlob.digest;
}
