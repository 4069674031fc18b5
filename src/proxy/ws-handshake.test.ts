import type http from 'node:http';
import { describe, expect, it } from 'vitest';
import { acceptMatches, websocketAccept, websocketKey } from './ws-handshake.js';

const msg = (headers: http.IncomingHttpHeaders) => ({ headers }) as http.IncomingMessage;

describe('WebSocket handshake verification (RFC 6455 §4)', () => {
  it('derives the RFC 6455 example Sec-WebSocket-Accept', () => {
    expect(websocketAccept('dGhlIHNhbXBsZSBub25jZQ==')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    expect(acceptMatches(msg({ 'sec-websocket-accept': 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' }), 'dGhlIHNhbXBsZSBub25jZQ==')).toBe(true);
  });

  it('refuses a missing, repeated or wrong Sec-WebSocket-Accept', () => {
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    expect(acceptMatches(msg({}), key)).toBe(false);
    expect(acceptMatches(msg({ 'sec-websocket-accept': 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' }), key)).toBe(false);
    expect(acceptMatches(msg({ 'sec-websocket-accept': 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=, s3pPLMBiTxaQ9kYGzzhZRbK+xOo=' }), key)).toBe(false);
  });

  it('accepts only one key of 16 base64 bytes', () => {
    expect(websocketKey(msg({ 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' }))).toBe('dGhlIHNhbXBsZSBub25jZQ==');
    for (const bad of [
      undefined,
      '',
      'abc',
      'dGhlIHNhbXBsZSBub25jZQ',
      'dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==',
      Buffer.alloc(15).toString('base64'),
      Buffer.alloc(17).toString('base64'),
    ]) {
      expect(websocketKey(msg(bad === undefined ? {} : { 'sec-websocket-key': bad })), String(bad)).toBeNull();
    }
  });
});
