// ContainerImage: an image in the container engine's local store (podman or docker), by reference pinned by digest; pulled (or loaded from an archive) only when missing.
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { guestPath } from '../engine/validate.ts';

/** registry/path/name[:tag][@sha256:<64 hex>], as the distribution reference grammar spells it (lower-case path, no scheme). */
const REFERENCE =
  /^(?<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::(?<tag>[\w][\w.-]{0,127}))?(?:@(?<digest>sha256:[0-9a-f]{64}))?$/;

export interface ImageReference {
  name: string;
  tag?: string | undefined;
  digest?: string | undefined;
}

/** The parts of an image reference, or undefined when it is not one (pure). */
export function parseImageReference(text: string): ImageReference | undefined {
  const m = REFERENCE.exec(text);
  return m?.groups ? { name: m.groups.name!, tag: m.groups.tag, digest: m.groups.digest } : undefined;
}

/** The reference the engine is asked for: name@digest when pinned (the tag is only a label then), else name:tag. */
export function storeReference(ref: ImageReference): string {
  return ref.digest ? `${ref.name}@${ref.digest}` : `${ref.name}:${ref.tag ?? 'latest'}`;
}

export const imageReference = z.string().superRefine((v, ctx) => {
  if (!parseImageReference(v))
    ctx.addIssue({ code: 'custom', message: `not an image reference: ${JSON.stringify(v)} (e.g. docker.io/istio/proxyv2:1.24.0@sha256:<64 hex digits>)` });
});

export const containerEngine = z.enum(['podman', 'docker']).default('podman');

export const containerImageSpec = z
  .strictObject({
    /** name[:tag]@sha256:<digest>; a reference without a digest only with allowUnpinned. */
    reference: imageReference,
    engine: containerEngine,
    /** An image archive on this machine (podman/docker save, oci-archive) loaded instead of a registry pull: air-gapped VMs. */
    archive: guestPath.optional(),
    /** Accept a reference without a digest: whatever the tag names when first pulled, never pulled again (it does not move here). */
    allowUnpinned: z.boolean().default(false),
    /** absent: removed from the store (offboarding with --purge). */
    ensure: z.enum(['present', 'absent']).default('present'),
  })
  .superRefine((spec, ctx) => {
    const ref = parseImageReference(spec.reference);
    if (ref && !ref.digest && !spec.allowUnpinned && spec.ensure === 'present')
      ctx.addIssue({
        code: 'custom',
        path: ['reference'],
        message: `${spec.reference} is not pinned by digest: give name@sha256:<digest> (what a tag names can change under the same name), or set allowUnpinned: true`,
      });
  });
export type ContainerImageSpec = z.output<typeof containerImageSpec>;

export interface ContainerImageState {
  present: boolean;
}

/**
 * The engine's command line. podman under --root keeps the root's own store (an image being built carries the proxy
 * image, as /var/lib/containers/storage inside it), and writes its run state and events nowhere else.
 */
const ROOT_STORE = '/var/lib/containers/storage';

export function engineArgv(host: Pick<HostReader, 'live' | 'root'>, spec: Pick<ContainerImageSpec, 'engine'>, args: readonly string[]): string[] {
  if (host.live || spec.engine === 'docker') return [spec.engine, ...args];
  const under = (p: string) => `${host.root.replace(/\/$/, '')}${p}`;
  return [
    'podman',
    '--root',
    under(ROOT_STORE),
    '--runroot',
    under('/run/containers/storage'),
    '--tmpdir',
    under('/run/libpod'),
    '--events-backend',
    'none',
    ...args,
  ];
}

export const containerImageType = {
  kind: 'container_image',
  schema: containerImageSpec,
  key: (spec: ContainerImageSpec) => storeReference(parseImageReference(spec.reference)!),
  // docker keeps its images in its daemon: there is no store inside a root to fill
  requires: (spec: ContainerImageSpec) => (spec.engine === 'docker' ? [{ live: 'docker keeps its images in the daemon of the running system' }] : []),

  async current(host: HostReader, spec: ContainerImageSpec): Promise<ContainerImageState> {
    const ref = storeReference(parseImageReference(spec.reference)!);
    // a root without a store holds no image; asking podman would create the store (plan writes nothing)
    if (!host.live && spec.engine === 'podman' && !(await host.stat(ROOT_STORE))) return { present: false };
    // no engine yet (this run installs it): no image either
    if ((await host.query(['sh', '-c', `command -v ${spec.engine}`])).exitCode !== 0) return { present: false };
    const result = await host.query(engineArgv(host, spec, ['image', 'inspect', '--format', '{{.Id}}', ref]));
    return { present: result.exitCode === 0 };
  },

  changes: (spec: ContainerImageSpec, current: ContainerImageState | undefined): Changes<ContainerImageState> =>
    Boolean(current?.present) === (spec.ensure === 'present') ? {} : { present: { from: Boolean(current?.present), to: spec.ensure === 'present' } },

  describe: (_field: string, change: { to: unknown }) =>
    change.to ? 'fetch it into the local store (pull it, or load the archive given)' : 'remove it from the local store',

  /**
   * Preflight, reading only (a fetch would write the store before the run may change anything): an archive must be an OCI
   * archive whose index names the digest, else the run stops before anything changes. A registry is asked when the
   * image is pulled (apply).
   */
  async prepare(host: Host, spec: ContainerImageSpec): Promise<string | undefined> {
    if (spec.ensure === 'absent' || (await present(host, spec))) return undefined;
    const ref = parseImageReference(spec.reference)!;
    if (!spec.archive) return `${storeReference(ref)}: pulled when the run converges (the registry is not asked before)`;
    const index = await host.query(['tar', '-xOf', host.realPath(spec.archive), './index.json', 'index.json'], { timeoutMs: 60_000 });
    const digests = [...index.stdout.matchAll(/"digest"\s*:\s*"(sha256:[0-9a-f]{64})"/g)].map((m) => m[1]);
    if (!index.stdout.trim())
      throw new Error(
        `the archive ${spec.archive} is not an OCI archive with an index.json (podman save --format oci-archive): ${index.stderr.trim() || 'no index'}`,
      );
    if (ref.digest && !digests.includes(ref.digest))
      throw new Error(`the archive ${spec.archive} does not hold ${storeReference(ref)}: its index names ${digests.join(', ') || 'no manifest'}`);
    return `${spec.archive}: an OCI archive whose index names ${ref.digest ?? 'an image'} (loaded when the run converges)`;
  },

  async apply(host: Host, spec: ContainerImageSpec): Promise<void> {
    if (spec.ensure === 'absent') {
      await host.run(engineArgv(host, spec, ['rmi', storeReference(parseImageReference(spec.reference)!)]));
      return;
    }
    await fetchImage(host, spec);
  },
};

async function present(host: HostReader, spec: ContainerImageSpec): Promise<boolean> {
  return (await containerImageType.current(host, spec)).present;
}

/** Pull (or load the archive), then make sure the store has the image by the reference: a registry or an archive that gave another is refused. */
async function fetchImage(host: Host, spec: ContainerImageSpec): Promise<void> {
  const ref = storeReference(parseImageReference(spec.reference)!);
  if (spec.archive) await host.run(engineArgv(host, spec, ['load', '--input', host.realPath(spec.archive)]));
  else await host.run(engineArgv(host, spec, ['pull', ...(spec.engine === 'podman' ? ['--quiet'] : []), ref]));
  if (!(await present(host, spec)))
    throw new Error(`${spec.archive ? `the archive ${spec.archive}` : 'the registry'} did not give ${ref}: ${spec.engine} has no image by that reference`);
}

export const ContainerImage = defineResource(containerImageType);
