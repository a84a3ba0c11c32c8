// The `debug` package's output is never on in meshvm: with DEBUG=* node-vault and follow-redirects (axios) print request options, a Vault token and a secret_id among them.
import createDebug from 'debug';

createDebug.disable();
