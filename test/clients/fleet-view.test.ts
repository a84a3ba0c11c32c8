// The fleet view computed from a run's status (clients/fleet-view.ts): label values Kubernetes accepts, what a no-op keeps
// of the last change, the condition of a failure, and when the last publish is still good.
import test from 'ava';
import { ANNOTATIONS, HEARTBEAT_SECONDS, LABELS, LEASES, fleetView, labelValue, upToDate } from '../../clients/fleet-view.ts';
import type { RunStatus } from '../../engine/run-status.ts';

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/; // Kubernetes' validation of a label value

function status(o: Partial<RunStatus> = {}): RunStatus {
  return {
    meshvm: '1.4.0',
    runlist: 'istio-vm',
    finishedAt: new Date('2026-12-01T10:00:00Z'),
    seconds: 0.3,
    outcome: 'unchanged',
    lastSuccessAt: new Date('2026-12-01T10:00:00Z'),
    resources: { total: 20, changed: 0, failed: 0, skipped: 0 },
    drift: [],
    expiries: [],
    apiCalls: {},
    ...o,
  };
}

test('label values are valid for any meshvm version string', (t) => {
  for (const version of ['1.4.0', '1.4.0-rc.1+build.7', '+weird+', 'x'.repeat(80), '-1.0-']) {
    const value = labelValue(version);
    t.regex(value, LABEL_VALUE, version);
    t.true(value.length <= 63);
  }
  t.is(labelValue('1.4.0+build.7'), '1.4.0_build.7');
});

test('a no-op keeps what the last change said; a change or a failure replaces it', (t) => {
  const changed = fleetView(
    status({
      outcome: 'changed',
      resources: { total: 20, changed: 2, failed: 0, skipped: 0 },
      drift: ['file[/etc/hosts]'],
      finishedAt: new Date('2026-12-01T09:00:00Z'),
    }),
  );
  t.like(changed.labels, { [LABELS.outcome]: 'converged', [LABELS.changed]: '2', [LABELS.drift]: '1', [LABELS.version]: '1.4.0' });
  t.is(changed.annotations[ANNOTATIONS.lastChange], '2026-12-01T09:00:00.000Z');
  t.is(changed.annotations[ANNOTATIONS.driftFound], 'file[/etc/hosts]');

  const noop = fleetView(status(), changed);
  t.deepEqual(noop, changed, 'the same view: nothing to write');

  const failed = fleetView(
    status({ outcome: 'failed', resources: { total: 20, changed: 0, failed: 1, skipped: 3 }, lastSuccessAt: new Date('2026-12-01T09:00:00Z') }),
    changed,
  );
  t.like(failed.labels, { [LABELS.outcome]: 'failed', [LABELS.changed]: '0', [LABELS.drift]: '0' });
  t.like(failed.condition, { type: 'MeshvmConverged', status: 'False', reason: 'Failed' });
  t.regex(failed.condition.message, /1 of 20 resources failed, 3 skipped/);
  t.is(failed.annotations[ANNOTATIONS.lastSuccess], '2026-12-01T09:00:00.000Z');
  t.false(ANNOTATIONS.driftFound in failed.annotations);

  // the first no-op after the failure: converged again, and that is news
  const recovered = fleetView(status(), failed);
  t.like(recovered.condition, { status: 'True', reason: 'Converged' });
  t.regex(recovered.condition.message, /nothing changed$/);
  t.is(fleetView(status({ outcome: 'interrupted' })).condition.reason, 'Interrupted');
});

test('the last publish is good for the same target and view until the heartbeat; a refusal waits for the heartbeat too', (t) => {
  const target = { api: LEASES, namespace: 'vm-ns', name: 'vm-7' };
  const view = fleetView(status());
  const at = '2026-12-01T10:00:00.000Z';
  const later = (seconds: number) => new Date(Date.parse(at) + seconds * 1000);
  const published = { target: 'Lease vm-ns/vm-7', view, at };
  t.true(upToDate(published, target, view, later(HEARTBEAT_SECONDS - 1)));
  t.false(upToDate(published, target, view, later(HEARTBEAT_SECONDS)), 'the heartbeat is due');
  t.false(upToDate(published, { ...target, name: 'vm-8' }, view, later(1)), 'another object');
  t.false(upToDate(published, target, fleetView(status({ outcome: 'failed' })), later(1)), 'another view');
  t.false(upToDate({ target: published.target, view }, target, view, later(1)), 'never written (the entry was missing)');
  t.false(upToDate(published, target, view, later(-60)), 'a clock that went back');
  const refused = { ...published, refused: 'forbidden' };
  t.true(upToDate(refused, target, fleetView(status({ outcome: 'failed' })), later(60)), 'refused: not asked again before the heartbeat');
});
