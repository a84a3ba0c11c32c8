// Redaction by the exact values marked secret: long ones wherever they appear, short ones only as whole words.
import test from 'ava';
import { Secrets } from '../../engine/secrets.ts';

test('a marked token is masked wherever it appears, also inside other text', (t) => {
  const s = new Secrets();
  s.add('hvs.CAESIJ3xq9VrPq0exampletoken');
  t.is(s.redact('X-Vault-Token: hvs.CAESIJ3xq9VrPq0exampletoken, again:hvs.CAESIJ3xq9VrPq0exampletoken.'), 'X-Vault-Token: (sensitive), again:(sensitive).');
});

test('a short secret is masked where it stands as a word, not inside longer words', (t) => {
  const s = new Secrets();
  s.add('pa55');
  t.is(s.redact('password=pa55 "pa55"\npa55'), 'password=(sensitive) "(sensitive)"\n(sensitive)');
  t.is(s.redact('spa55x pa55word'), 'spa55x pa55word');
});

test('only what is marked: a value never added is never masked, multi-line keys are masked line by line', (t) => {
  const s = new Secrets();
  const key = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n';
  s.add(key);
  t.is(s.redact('namespace: default'), 'namespace: default');
  t.is(s.redact('-MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg'), '-(sensitive)');
});
