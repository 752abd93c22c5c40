// Malformed HTTP/1.1 on a proxy port: the status to answer with and the text naming what was wrong.

import { STATUS_CODES } from 'node:http';
import { MeshError } from '../../errors';


/** A malformed message; `status` is the HTTP status to answer (400, 431, 501). */
export class HttpFramingError extends MeshError {
  declare readonly code: 'MESH_ERR_HTTP_MALFORMED';
  readonly status: number;

  constructor(status: number, message: string) {
    super('MESH_ERR_HTTP_MALFORMED', message);
    this.name = 'HttpFramingError';
    this.status = status;
  }
}

/** The bytes of a minimal `connection: close` plain-text response answering `err`. */
export function errorResponse(err: HttpFramingError): Buffer {
  const body = Buffer.from(`${err.message}\n`, 'utf8');
  const head = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}
