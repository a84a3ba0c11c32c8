// Where meshvm keeps its own state on a machine (guest paths: under --root they are mapped like every other path).

/** meshvm's own files: reports, owed notifications, backups, installed-package marks. */
export const STATE_DIR = '/var/lib/meshvm';
/** The report of the last converge that ran its resources. */
export const LAST_RUN_FILE = `${STATE_DIR}/last-run.json`;
/** Notifications owed, kept until delivered. */
export const PENDING_FILE = `${STATE_DIR}/pending.json`;
/** Replaced files, the last few of each. */
export const BACKUP_DIR = `${STATE_DIR}/backup`;
/** How many backups of one file are kept. */
export const BACKUPS_KEPT = 5;
/** The .deb files meshvm installed by path or URL, with their checksums. */
export const INSTALLED_DEBS_DIR = `${STATE_DIR}/debs`;
/** The run lock shared by cloud-init, Terraform, the timer and people. */
export const LOCK_FILE = '/run/meshvm.lock';
/** The operator's configuration. */
export const CONFIG_DIR = '/etc/meshvm';
/** This machine's attributes (node file). */
export const NODE_FILE = `${CONFIG_DIR}/node.yaml`;
