// The symlink-swap race: an unprivileged account that owns a directory swaps a drifted file for a link to a root file while meshvm repairs it.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { fileSpec, fileType } from '../../resources/file.ts';
import { ATTACKER_ID, buildSwapper, raceUnavailable, startAttacker } from '../helpers/attacker.ts';
import { scratchRoot } from '../helpers/scratch.ts';

const TRIALS = 200;
const unavailable = raceUnavailable();

/**
 * As on a VM at --root /: /etc/certs-like directory owned by the attacker (uid 4242), a root-owned cert.pem in it
 * drifted to 0644 root:root (wanted 0640 root:nogroup), and beside it `swap`, a link to a root 0600 file outside. The
 * attacker exchanges the two names nonstop (renameat2(RENAME_EXCHANGE): each name is always one or the other), while
 * meshvm reads the file (File's current: an lstat) and, when it read the drifted file, repairs it (File's apply: chown,
 * then chmod): 200 such trials. A
 * repair that followed the link would re-mode or re-group the canary; a read that followed it would read the canary's
 * content into the diff. Checked against the code before the safe walk
 * (commit bd84f18, chmod and reads by path): the canary was re-moded in 38 and 27 of 200 trials (two runs), and its
 * content read 77 times; here both must be 0.
 */
(unavailable ? test.skip : test)(
  `a link swapped in between the read and the repair is never followed: 0 of ${TRIALS} trials reach the root file outside${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  async (t) => {
    const work = await scratchRoot(t, 'meshvm-race-');
    await fs.chmod(work, 0o755);
    const certs = path.join(work, 'certs');
    await fs.mkdir(certs, { mode: 0o755 });
    await fs.chown(certs, ATTACKER_ID, ATTACKER_ID);
    const vault = await scratchRoot(t, 'meshvm-canary-');
    const canary = path.join(vault, 'canary');
    await fs.writeFile(canary, 'root only\n', { mode: 0o600 });
    const file = path.join(certs, 'cert.pem');
    await fs.writeFile(file, 'cert\n', { mode: 0o644 });
    await fs.symlink(canary, path.join(certs, 'swap'));
    // the real file, whatever name it has at the moment: its drift is restored through this descriptor, never by path
    const real = await fs.open(file, 'r');
    t.teardown(() => real.close());

    const { argv, how } = await buildSwapper(work);
    const attacker = startAttacker(argv, [certs, 'cert.pem', 'swap']);
    t.teardown(async () => {
      attacker.kill('SIGKILL');
      await attacker;
    });

    const host = localHost({ root: '/' });
    const spec = fileSpec.parse({ path: file, mode: 0o640, group: 'nogroup' });
    let readLink = 0;
    let repaired = 0;
    let reached = 0;
    let read = 0;
    const refusals = new Map<string, number>();
    // a trial is a read that saw the drifted file, then the repair; reads that saw the link (nothing to repair) are not trials
    let trials = 0;
    for (let reads = 0; trials < TRIALS && reads < 100 * TRIALS; reads++) {
      await real.chown(0, 0);
      await real.chmod(0o644);
      try {
        const current = await fileType.current(host, spec);
        if (current?.content.includes('root only')) read++;
        if (current?.type !== 'file') {
          readLink++;
          continue;
        }
        trials++;
        await fileType.apply(host, spec, fileType.changes(spec, current), current);
        repaired++;
      } catch (error) {
        const why = (error as Error).message.replace(file, 'FILE');
        refusals.set(why, (refusals.get(why) ?? 0) + 1);
      } finally {
        const st = await fs.stat(canary);
        if ((st.mode & 0o7777) !== 0o600 || st.gid !== 0) {
          reached++;
          await fs.chown(canary, 0, 0);
          await fs.chmod(canary, 0o600);
        }
      }
    }
    t.is(attacker.exitCode, null, `the attacker (${how}) kept running: ${attacker.exitCode}`);
    t.is(trials, TRIALS, `only ${trials} reads saw the file in ${readLink + trials} reads`);
    t.log(`attacker: ${how}, as uid ${ATTACKER_ID}; ${trials} trials (and ${readLink} reads that saw the link): ${repaired} repaired the file, refused:`);
    for (const [why, count] of refusals) t.log(`  ${count} × ${why}`);
    t.is(reached, 0, `the root file outside was re-moded or re-grouped in ${reached} of ${TRIALS} trials`);
    t.is(read, 0, `the root file's content was read (and would show in a diff) in ${read} reads`);
    for (const why of refusals.keys())
      t.regex(why, /is a link; meshvm changes the file itself, never through a link|refusing to read FILE: it is a link in a directory owned by uid 4242/);
    t.true(repaired > 0, 'the repair itself still works between the swaps');
  },
);
