import { FileLock } from '../../src/store/file-lock.js';

/** Whether taking the lock on `file` now fails because another holder has it. */
export function heldByAnother(file: string): boolean {
  try {
    FileLock.take(file).release();
    return false;
  } catch (err) {
    return FileLock.isHeld(err);
  }
}
