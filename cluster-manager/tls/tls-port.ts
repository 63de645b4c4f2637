import { createServer, type Server, type Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';

/** Every TLS connection opens with a handshake record; anything else is a plain-text client. */
const TLS_HANDSHAKE_RECORD = 0x16;
/** A connection that sends nothing for this long is closed (it holds a socket and proves nothing). */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

/**
 * One port of a TLS server that looks at each connection's first bytes: a TLS handshake goes on to `secure`,
 * anything else to `onPlainText` (which tells the client, or logs, what went wrong) instead of a handshake
 * that fails without a word.
 */
export class TlsPort {
  readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(secure: TlsServer, onPlainText: (socket: Socket, first: Buffer) => void) {
    this.server = createServer({ noDelay: true }, (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => socket.destroy());
      socket.once('data', (first: Buffer) => {
        socket.setTimeout(0);
        socket.pause();
        // Back into the socket's buffer: the TLS socket that wraps it reads what is buffered first.
        socket.unshift(first);
        if (first[0] === TLS_HANDSHAKE_RECORD) secure.emit('connection', socket);
        else onPlainText(socket, first);
        process.nextTick(() => socket.resume());
      });
    });
  }

  /** Stops listening and closes every connection still open. */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    return closed;
  }
}

/** Answers a plain HTTP request on the HTTPS port with a 400 that says what to use. */
export function answerPlainHttp(socket: Socket): void {
  const body =
    'This port speaks HTTPS: use https:// (the cluster manager runs with TLS unless started with --insecure).\n';
  socket.end(
    `HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
