// Package's pure parts on output captured from dpkg and apt in the booted Debian 12 guest (test/fixtures/dpkg/).
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { dpkgErrors, parseDebFields } from '../../resources/package.ts';
import { PROJECT } from '../helpers/scratch.ts';

const fixture = (name: string) => fs.readFile(path.join(PROJECT, 'test/fixtures/dpkg', name), 'utf8');

test("dpkgErrors keeps what a failed apt-get install says went wrong: the postinst's own line, dpkg's error, apt's", async (t) => {
  t.is(
    dpkgErrors(await fixture('apt-install-postinst-failed.txt')),
    [
      'the fixture postinst fails on purpose',
      'dpkg: error processing package meshvm-test-cap (--configure):',
      ' installed meshvm-test-cap package post-installation script subprocess returned error exit status 1',
      'Errors were encountered while processing:',
      ' meshvm-test-cap',
      'E: Sub-process /usr/bin/dpkg returned an error code (1)',
    ].join('\n'),
  );
  t.is(dpkgErrors('one\ntwo\n'), 'one\ntwo', 'no error lines: the last lines as they are');
});

test('parseDebFields reads dpkg-deb --field FILE Package Version', async (t) => {
  t.deepEqual(parseDebFields(await fixture('deb-fields.txt')), { Package: 'meshvm-test-cap', Version: '1.1' });
  t.deepEqual(parseDebFields(''), {});
});
