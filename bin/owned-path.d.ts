// Types of owned-path.js.
/** Why `target` (a real directory or regular file) could be changed by a user other than root and `uid`, or undefined. */
export function notOwned(target: string, uid: number): string | undefined;
/** notOwned for a file that may be reached through a symlink: the link's directory, then the file the link leads to. */
export function fileNotOwned(file: string, uid: number): string | undefined;
