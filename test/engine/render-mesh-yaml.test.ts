// The VM's mesh config (/etc/istio/config/mesh, YAML as istioctl writes it) under arbitrary proxy metadata, ProxyConfig fields and labels: refused naming the file and field, or a YAML 1.1 parser (what the sidecar's go-yaml reads) gives back exactly the tree meant.
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { renderMeshConfig } from '../../recipes/certs.ts';
import { meshMember, memberProxyConfig, proxyMetadataAttribute, workload } from '../../recipes/mesh.ts';
import { RenderError } from '../../engine/values.ts';
import { hostileText, Tally } from '../helpers/hostile.ts';

class Refused extends Error {}

/**
 * YAML 1.1 as go-yaml v2 (the sidecar's reader) resolves plain scalars: the yaml package's 1.1 schema, but a float needs a
 * digit, as go-yaml's yamlStyleFloat does (the package reads "e0" and "." as NaN; go-yaml reads strings).
 */
function readGoYaml(text: string): unknown {
  const digitFirst = /^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]*[0-9][0-9_]*)$/;
  const exponent = /^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]*[0-9][0-9_]*)[eE][-+]?[0-9]+$/;
  return parseYaml(text, {
    version: '1.1',
    customTags: (tags) =>
      (tags as { tag: string; format?: string; test?: RegExp }[]).map((tag) =>
        tag.tag === 'tag:yaml.org,2002:float' && tag.format === 'EXP'
          ? { ...tag, test: exponent }
          : tag.tag === 'tag:yaml.org,2002:float' && !tag.format && tag.test?.source.endsWith('\\.[0-9_]*$')
            ? { ...tag, test: digitFirst }
            : tag,
      ) as never,
  });
}

const key = fc.oneof(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,12}$/), hostileText(5));
// long values with spaces too: the emitter folds past column 80
const value = fc.oneof(
  hostileText(14),
  fc.array(fc.constantFrom('word', ' ', '  ', 'x:', '#y', "'q'", '"d"'), { maxLength: 40 }).map((w) => w.join('')),
);
const given = fc.record({
  metadata: fc.dictionary(key, value, { maxKeys: 4 }),
  // ProxyConfig fields meshvm does not type itself are carried as the cluster gave them (istioctl does too)
  extra: fc.dictionary(
    fc.oneof(fc.constantFrom('tracing', 'concurrency', 'holdApplicationUntilProxyStarts'), hostileText(4)),
    fc.oneof(value, fc.integer(), fc.boolean(), fc.array(value, { maxLength: 2 })),
    { maxKeys: 2 },
  ),
  labels: fc.dictionary(fc.oneof(fc.constantFrom('app', 'version', 'app.kubernetes.io/name'), hostileText(4)), hostileText(6), { maxKeys: 2 }),
});

test('arbitrary proxy metadata, ProxyConfig fields and labels: refused, or read back exactly by a YAML 1.1 parser', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(given, ({ metadata, extra, labels }) => {
      const text = tally.attempt(
        () => {
          const md = proxyMetadataAttribute.safeParse(metadata);
          const w = workload.safeParse({ name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', labels });
          if (!md.success || !w.success) throw new Refused();
          const mesh = { source: 'ConfigMap istio-system/istio', trustDomain: 'cluster.local', defaultConfig: { ...extra, proxyMetadata: md.data } };
          const member = meshMember(w.data, 'istio-system', { mesh, injector: { source: 'x', clusterName: 'c1', network: '', meshId: '' } });
          return { text: renderMeshConfig(member, { dnsCapture: true }), meant: memberProxyConfig(member, { dnsCapture: true }) };
        },
        Refused,
        RenderError,
      );
      if (!text) return;
      assert.deepStrictEqual(readGoYaml(text.text), { defaultConfig: JSON.parse(JSON.stringify(text.meant)) }, text.text);
    }),
    { numRuns: 300 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});

test('the render refuses on its own what the mesh config cannot carry, naming the file and the field', (t) => {
  const w = workload.parse({ name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa' });
  const mesh = {
    source: 'x',
    trustDomain: 'cluster.local',
    defaultConfig: { proxyMetadata: {}, tracing: { zipkin: { address: 'z:9411\u2028proxyMetadata: {}' } } },
  };
  const member = meshMember(w, 'istio-system', { mesh, injector: { source: 'x', clusterName: 'c1', network: '', meshId: '' } });
  t.throws(() => renderMeshConfig(member, { dnsCapture: true }), {
    instanceOf: RenderError,
    message: 'refusing to write "z:9411\u2028proxyMetadata: {}" into /etc/istio/config/mesh (defaultConfig.tracing.zipkin.address): it has a line break',
  });
  t.false(proxyMetadataAttribute.safeParse({ 'A=B': 'x' }).success, 'a key with "=" is not an environment variable name');
  t.false(proxyMetadataAttribute.safeParse({ A: 'x\u0007' }).success, 'a value with a control character is refused');
  t.false(workload.safeParse({ name: 'r', namespace: 'n', serviceAccount: 's', labels: { app: 'a\nb' } }).success, 'labels are label values');
});
