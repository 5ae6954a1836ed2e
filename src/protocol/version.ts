/** confab's own release version (the protocol's VERSION reply is "1", the course's). */
export const CONFAB_VERSION = '0.1.0';
