export * from './chat-client.js';
