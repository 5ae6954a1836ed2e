export * from './banned-words.js';
export * from './chat.js';
export * from './nickname.js';
export * from './ports.js';
export * from './room.js';
export * from './session.js';
