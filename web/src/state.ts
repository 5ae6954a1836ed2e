// What the page's modules share beyond their own state: the connection, and what the page keeps
// of its session beside it.
import type { Connection, Status } from './connection.js';

/**
 * The page's one connection. main.ts makes it, as its handlers are the whole page, and hands it
 * over before anything runs; the modules that ask the server, or need the reader's nickname,
 * read it here rather than import main.ts.
 */
export let connection: Connection;

export function setConnection(made: Connection): void {
  connection = made;
}

/** What the page keeps of its session beside the connection, kept by main.ts and the commands. */
export const page: {
  /**
   * The rooms of the session the page came back as, until it is back in: joining under
   * another nickname (its own was taken meanwhile) still rejoins them.
   */
  restoredRooms: string[] | undefined;
  /** The operator name OPER granted this session; a new session starts without it. */
  operatorName: string | undefined;
  /** The status last shown, to tell the moment a connection is lost from the retries after it. */
  shownStatus: Status;
  /** The chat line typed last: without history it is all that tells which chat a "90" 2001 refused. */
  lastSent: HTMLLIElement | undefined;
} = {
  restoredRooms: undefined,
  operatorName: undefined,
  shownStatus: 'offline',
  lastSent: undefined,
};
