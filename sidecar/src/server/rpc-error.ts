// Errors a request handler raises on purpose: a JSON-RPC code from the protocol, a message for people, and the
// request id in `data` so a user can find the details in the sidecar log.

import { ErrorCodes, type ErrorData } from '../protocol/index';

export class RpcError extends Error {
  constructor(readonly code: number, message: string, readonly extra: Omit<ErrorData, 'requestId'> = {}) {
    super(message);
  }
}

export const rpc = {
  invalidParams: (m: string) => new RpcError(ErrorCodes.InvalidParams, m),
  unknownDocument: (uri: string) => new RpcError(ErrorCodes.UnknownDocument, `${uri} is not open and not in the workspace files the sidecar knows`),
  outside: (m: string) => new RpcError(ErrorCodes.OutsideWorkspace, m),
  cancelled: () => new RpcError(ErrorCodes.RequestCancelled, 'request cancelled'),
  superseded: () => new RpcError(ErrorCodes.Superseded, 'a newer completion for this document replaced this one'),
  busy: (retryAfterMs: number, m: string) => new RpcError(ErrorCodes.Busy, m, { retryAfterMs }),
  overflow: (m: string) => new RpcError(ErrorCodes.ContextOverflow, m),
  model: (m: string) => new RpcError(ErrorCodes.ModelError, m),
};
