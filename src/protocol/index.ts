export * from './capabilities.js';
export * from './codes.js';
export * from './frame-decoder.js';
export * from './message-codec.js';
export type * from './messages.js';
export * from './request-codec.js';
