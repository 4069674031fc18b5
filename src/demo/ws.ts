import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * A deliberately small RFC 6455 implementation for the demo upstream and tests: single-frame
 * messages, no extensions. Not for production traffic.
 */

/** The GUID every Sec-WebSocket-Accept is derived with (RFC 6455 §1.3). */
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Frame opcodes. */
export const Opcode = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** One decoded frame. */
export interface WsFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/** `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`. */
export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
}

/** Encodes one final frame; clients must mask (`mask: true`), servers must not. */
export function encodeFrame(opcode: number, payload: Buffer | string, mask: boolean): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const len = data.length;
  const lenBytes = len < 126 ? 0 : len < 65_536 ? 2 : 8;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = 0x80 | (opcode & 0x0f);
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65_536 ? 126 : 127);
  if (lenBytes === 2) head.writeUInt16BE(len, 2);
  else if (lenBytes === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, data]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const body = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) body[i] = data[i] ^ key[i & 3];
  return Buffer.concat([head, body]);
}

/** Incremental frame decoder: feed it chunks, get complete frames back. */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);

  /** @param maxPayload frames larger than this throw (protects the demo from huge allocations). @default 16 MiB */
  constructor(private readonly maxPayload = 16 * 1024 * 1024) {}

  /** Appends `chunk` and returns every frame now complete. */
  push(chunk: Buffer): WsFrame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: WsFrame[] = [];
    for (;;) {
      const b = this.buf;
      if (b.length < 2) break;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(this.maxPayload)) throw new Error('frame too large');
        len = Number(big);
        off = 10;
      }
      if (len > this.maxPayload) throw new Error('frame too large');
      const need = off + (masked ? 4 : 0) + len;
      if (b.length < need) break;
      const payload = Buffer.from(b.subarray(off + (masked ? 4 : 0), need));
      if (masked) {
        const key = b.subarray(off, off + 4);
        for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      }
      out.push({ fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, masked, payload });
      this.buf = b.subarray(need);
      if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    }
    return out;
  }
}

/** A connected test client. */
export interface WsClient {
  /** The handshake response (status 101). */
  readonly response: http.IncomingMessage;
  /** Sends a text message. */
  send(text: string): void;
  /** The next text message (waits up to `timeoutMs`). */
  next(timeoutMs?: number): Promise<string>;
  /** Sends a close frame and destroys the socket. */
  close(): void;
  /** The raw socket (for abuse tests). */
  readonly socket: Duplex;
}

/** Error from {@link connectWebSocket} when the server answers without upgrading. */
export class WsHandshakeError extends Error {
  constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    readonly body: string,
  ) {
    super(`WebSocket handshake refused: ${status}`);
  }
}

/**
 * A minimal WebSocket client for tests (`ws://` only, via node:http): connects, checks
 * `Sec-WebSocket-Accept`, and queues incoming text messages. Rejects with
 * {@link WsHandshakeError} on a non-101 answer.
 */
export function connectWebSocket(url: string, headers: Record<string, string> = {}): Promise<WsClient> {
  const u = new URL(url);
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const req = http.request({
      hostname: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      agent: false,
      headers: { ...headers, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13' },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => undefined);
      res.on('close', () => reject(new WsHandshakeError(res.statusCode ?? 0, res.headers, Buffer.concat(chunks).toString('utf8'))));
    });
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== acceptKey(key)) {
        socket.destroy();
        reject(new Error('bad Sec-WebSocket-Accept'));
        return;
      }
      const parser = new FrameParser();
      const queue: string[] = [];
      const waiters: { resolve: (s: string) => void; reject: (e: Error) => void }[] = [];
      let ended: Error | undefined;
      const deliver = (text: string): void => {
        const w = waiters.shift();
        if (w) w.resolve(text);
        else queue.push(text);
      };
      const onData = (chunk: Buffer): void => {
        for (const f of parser.push(chunk)) {
          if (f.opcode === Opcode.text) deliver(f.payload.toString('utf8'));
          else if (f.opcode === Opcode.ping) socket.write(encodeFrame(Opcode.pong, f.payload, true));
          else if (f.opcode === Opcode.close) socket.end();
        }
      };
      socket.on('data', onData);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        ended = new Error('socket closed');
        for (const w of waiters.splice(0)) w.reject(ended);
      });
      if (head.length) onData(head);
      resolve({
        response: res,
        socket,
        send: (text) => socket.write(encodeFrame(Opcode.text, text, true)),
        next: (timeoutMs = 5_000) =>
          new Promise<string>((res2, rej2) => {
            const q = queue.shift();
            if (q !== undefined) return res2(q);
            if (ended) return rej2(ended);
            const w = {
              resolve: (s: string) => {
                clearTimeout(t);
                res2(s);
              },
              reject: (e: Error) => {
                clearTimeout(t);
                rej2(e);
              },
            };
            const t = setTimeout(() => {
              waiters.splice(waiters.indexOf(w), 1);
              rej2(new Error('timed out waiting for a message'));
            }, timeoutMs);
            waiters.push(w);
          }),
        close: () => {
          if (!socket.destroyed) socket.write(encodeFrame(Opcode.close, Buffer.from([0x03, 0xe8]), true));
          socket.destroy();
        },
      });
    });
    req.end();
  });
}
