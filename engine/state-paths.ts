// Where meshvm keeps its own state on a machine (guest paths: under --root they are mapped like every other path).

/** meshvm's own files: reports, owed notifications, backups, installed-package marks. */
export const STATE_DIR = '/var/lib/meshvm';
/** The report of the last converge that ran its resources. */
export const LAST_RUN_FILE = `${STATE_DIR}/last-run.json`;
/** What the last converges found: each resource's declaration digest (to tell drift from a new declaration), the last success. */
export const STATUS_FILE = `${STATE_DIR}/status.json`;
/** What the last converge published on the VM's registration object (the fleet seen from Kubernetes), and when. */
export const FLEET_VIEW_FILE = `${STATE_DIR}/fleet-view.json`;
/** Notifications owed, kept until delivered. */
export const PENDING_FILE = `${STATE_DIR}/pending.json`;
/** Replaced files, the last few of each. */
export const BACKUP_DIR = `${STATE_DIR}/backup`;
/** How many backups of one file are kept. */
export const BACKUPS_KEPT = 5;
/** The .deb files meshvm installed by path or URL, with their checksums. */
export const INSTALLED_DEBS_DIR = `${STATE_DIR}/debs`;
/** What meshvm wrote into the files it tracks (File track: true): one sha256 per path, so offboarding knows they are its own. */
export const WRITTEN_DIR = `${STATE_DIR}/written`;
/** The packages meshvm installed from apt where none was installed: one empty file per package, so offboarding knows them. */
export const INSTALLED_PACKAGES_DIR = `${STATE_DIR}/packages`;
/** What meshvm turned on (Service track: true): one file per unit, so offboarding turns off only that. */
export const SERVICES_DIR = `${STATE_DIR}/services`;
/** The run lock shared by cloud-init, Terraform, the timer and people. */
export const LOCK_FILE = '/run/meshvm.lock';
/** The operator's configuration. */
export const CONFIG_DIR = '/etc/meshvm';
/** This machine's attributes (node file). */
export const NODE_FILE = `${CONFIG_DIR}/node.yaml`;
