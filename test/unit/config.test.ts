import { describe, expect, it } from 'vitest';
import { ConfigError, envName, loadConfig, SERVE_OPTIONS } from '../../src/config.js';

describe('loadConfig', () => {
  it('uses documented defaults', () => {
    const c = loadConfig({}, {});
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(20825);
    expect(c.maxUsers).toBe(10);
    expect(c.maxFrame).toBe(65536);
    expect(c.bannedWords).toBeUndefined();
    expect(c.tlsPort).toBeUndefined();
  });

  it('prefers a flag over its environment variable over the default', () => {
    expect(loadConfig({}, { CONFAB_PORT: '4000' }).port).toBe(4000);
    expect(loadConfig({ port: '5000' }, { CONFAB_PORT: '4000' }).port).toBe(5000);
    expect(loadConfig({}, { CONFAB_HIDE_ADDRESSES: 'yes' }).hideAddresses).toBe(true);
    expect(loadConfig({ 'hide-addresses': true }, {}).hideAddresses).toBe(true);
    expect(loadConfig({}, { CONFAB_BANNED_WORDS: '' }).bannedWords).toBeUndefined();
  });

  it('names every option CONFAB_ plus its flag in upper snake case', () => {
    expect(envName('max-conns-per-ip')).toBe('CONFAB_MAX_CONNS_PER_IP');
    expect(Object.keys(SERVE_OPTIONS).length).toBeGreaterThan(10);
  });

  it('rejects bad values with the source named', () => {
    expect(() => loadConfig({ port: '70000' }, {})).toThrow(/--port: 70000 is outside 0..65535/);
    expect(() => loadConfig({}, { CONFAB_MAX_USERS: 'ten' })).toThrow(
      /CONFAB_MAX_USERS: expected a whole number/,
    );
    expect(() => loadConfig({ 'log-format': 'xml' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({}, { CONFAB_HIDE_ADDRESSES: 'maybe' })).toThrow(/true or false/);
  });

  it('takes "off" for the HTTP port', () => {
    expect(loadConfig({ 'http-port': 'off' }, {}).httpPort).toBe(-1);
    expect(loadConfig({}, { CONFAB_HTTP_PORT: '8080' }).httpPort).toBe(8080);
    expect(() => loadConfig({ 'http-port': '-5' }, {})).toThrow(/outside/);
  });

  it('needs all of the TLS options or none', () => {
    expect(() => loadConfig({ 'tls-port': '7000' }, {})).toThrow(/TLS needs all three/);
    const c = loadConfig({ 'tls-port': '7000', 'tls-cert': 'c.pem', 'tls-key': 'k.pem' }, {});
    expect(c.tlsPort).toBe(7000);
  });
});
