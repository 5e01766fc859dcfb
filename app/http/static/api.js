// Calls to this backend: JSON routes, the streamed chat turn, and the error body all routes share.

/** An error of the API (its `{"error": {...}}` body), or of the network (`status` 0). */
export class ApiError extends Error {
  constructor({
    status,
    type,
    message,
    requestId = null,
    retryAfter = null,
    upstreamStatus = null,
    midStream = false,
  }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
    this.upstreamStatus = upstreamStatus;
    // True when the answer had begun: what arrived before the failure is saved by the server.
    this.midStream = midStream;
  }
}

/** Seconds to wait from a `Retry-After` header (seconds or an HTTP date), or null. */
function retryAfterSeconds(header) {
  if (!header) return null;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

async function errorFrom(response) {
  let detail = {};
  try {
    detail = (await response.json()).error ?? {};
  } catch {
    // Not our JSON (a proxy's error page): the status says enough.
  }
  return new ApiError({
    status: response.status,
    type: detail.type ?? 'http_error',
    message: detail.message ?? `${response.status} ${response.statusText}`.trim(),
    requestId: detail.request_id ?? response.headers.get('X-Request-ID'),
    retryAfter: retryAfterSeconds(response.headers.get('Retry-After')),
    upstreamStatus: detail.upstream_status ?? null,
  });
}

function unreachable(cause) {
  return new ApiError({
    status: 0,
    type: 'unreachable',
    message: cause instanceof Error ? cause.message : String(cause),
  });
}

/** Splits a server-sent event stream into the JSON of its `data:` events. */
class SseParser {
  constructor() {
    this.buffer = '';
  }

  /** The events completed by `text`, in order; comments (": keep-alive") are skipped. */
  push(text) {
    this.buffer += text;
    const events = [];
    const blocks = this.buffer.split(/\r?\n\r?\n/);
    this.buffer = blocks.pop();
    for (const block of blocks) {
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(line.startsWith('data: ') ? 6 : 5));
      if (data.length) events.push(JSON.parse(data.join('\n')));
    }
    return events;
  }
}

export class Api {
  /** `token`: the caller's OpenRouter key, or an app token where the server holds the key. */
  constructor(token) {
    this.token = token;
  }

  async request(path, {method = 'GET', body, signal, auth = true} = {}) {
    const headers = {};
    if (auth) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw unreachable(error);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async json(path, options) {
    const response = await this.request(path, options);
    return response.status === 204 ? null : response.json();
  }

  models() {
    return this.json('/models', {auth: false});
  }

  sessions(offset = 0, limit = 50) {
    return this.json(`/sessions?limit=${limit}&offset=${offset}`);
  }

  session(id) {
    return this.json(`/sessions/${encodeURIComponent(id)}`);
  }

  deleteSession(id) {
    return this.json(`/sessions/${encodeURIComponent(id)}`, {method: 'DELETE'});
  }

  /**
   * One streamed turn: yields the `delta` events, returns the `done` event, and throws an
   * ApiError for an error event, a refusal before the stream, or a stream cut short.
   * Aborting `signal` hangs up, which makes the server stop the upstream call.
   */
  async *chat(body, signal) {
    const response = await this.request('/chat', {
      method: 'POST',
      body: {...body, stream: true},
      signal,
    });
    const requestId = response.headers.get('X-Request-ID');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (signal?.aborted) throw error;
          throw new ApiError({
            status: 0,
            type: 'stream_cut',
            message: 'the connection to the server broke during the answer',
            requestId,
            midStream: true,
          });
        }
        if (chunk.done) break;
        let events;
        try {
          events = parser.push(chunk.value);
        } catch {
          throw new ApiError({
            status: 0,
            type: 'bad_event',
            message: 'the server sent an event this page cannot read',
            requestId,
            midStream: true,
          });
        }
        for (const event of events) {
          if (event.type === 'delta') yield event;
          else if (event.type === 'done') return event;
          else if (event.type === 'error') {
            const {error} = event;
            throw new ApiError({
              status: error.status,
              type: error.type,
              message: error.message,
              requestId: error.request_id ?? requestId,
              upstreamStatus: error.upstream_status ?? null,
              midStream: true,
            });
          }
        }
      }
    } finally {
      reader.releaseLock();
    }
    throw new ApiError({
      status: 0,
      type: 'stream_cut',
      message: 'the stream ended before the answer was complete',
      requestId,
      midStream: true,
    });
  }
}

/** A new session id: 128 random bits, URL-safe base64, as the server makes them. */
export function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replaceAll('+', '-')
    .replaceAll('/', '_')
    .replace(/=+$/, '');
}
