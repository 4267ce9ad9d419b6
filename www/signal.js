/*
 * signal.js - browser client for signal-fcgi: WebRTC signaling over a
 * WebSocket where one connects, else plain HTTP (POST to send, Server-Sent
 * Events or long-poll to receive).
 * A dependency-free ES module; no build step.
 *
 *   import { SignalClient } from './signal.js';
 *   const sc = new SignalClient({ base: '/api', transport: 'auto' });
 *   sc.addEventListener('signal', (e) => handle(e.detail));    // {from, roomId, ...your fields}
 *   sc.addEventListener('user-joined', (e) => ...);            // {userId, roomId, protocol}
 *   sc.addEventListener('user-left', (e) => ...);              // {userId, roomId}
 *   sc.addEventListener('state', (e) => ...);                  // {state, transport}
 *   sc.addEventListener('session-lost', () => ...);            // token dead (401): log in again
 *   sc.addEventListener('events-lost', (e) => ...);            // the server reports a gap
 *   await sc.login('alice', { protocol: 'demo', auth });       // auth: from your backend, if required
 *   const { users } = await sc.join('room1');                  // every member, you included
 *   await sc.signal('bob', { description });                   // to one peer
 *   sc.signal('bob', { candidate }, { batch: true });          // trickled ICE: sent together
 *   await sc.signal(null, { hello: 1 });                       // to everyone else in the room
 *   await sc.roomUsers('room1'); await sc.leave(); await sc.logout();
 *
 * Options: base ('/api'), transport ('auto' | 'ws' | 'sse' | 'poll'),
 * heartbeatMs (20000), pollTimeout (25 s), openTimeoutMs (5000). 'auto'
 * tries a WebSocket first (commands then go over it too); one that does not
 * open and authenticate within openTimeoutMs means it is blocked: SSE next.
 * An SSE stream that has not opened by then, or fails twice before
 * delivering anything, means a proxy is in the way: long-poll last.
 *
 * Delivery: every event carries an id; the client keeps the highest one it
 * has seen, ignores anything at or below it (nothing twice) and resumes from
 * it on every reconnect, on either transport (nothing lost). Heartbeats
 * carry it as "ack", so the server can free what was delivered. Commands
 * that fail on the network (or with 502/503/504) are retried with backoff;
 * a 401 ends the session: 'session-lost' is dispatched and nothing loops.
 * Errors reject with an Error whose .code is the server's error code
 * ('room-full', 'user-exists', ...) and .status the HTTP status.
 */

const RETRY_STATUSES = new Set([0, 502, 503, 504]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class SignalError extends Error {
  constructor(reply, status) {
    super((reply && reply.msg) || `request failed (${status})`);
    this.code = (reply && reply.error) || 'network';
    this.status = status;
    this.reply = reply;
  }
}

export class SignalClient extends EventTarget {
  constructor(opts = {}) {
    super();
    this.base = opts.base || '/api';
    this.mode = opts.transport || 'auto';
    this.heartbeatMs = opts.heartbeatMs || 20000;
    this.pollTimeout = opts.pollTimeout || 25;
    this.openTimeoutMs = opts.openTimeoutMs || 5000;
    this.token = null;
    this.userId = null;
    this.roomId = null;
    this.lastId = 0;
    this.transport = null; // 'ws' | 'sse' | 'poll' while receiving
    this.state = 'closed';
    this._es = null;
    this._ws = null;
    this._wsReady = false;  // authenticated: commands may use it
    this._wsPending = [];   // reply callbacks, in command order
    this._pollAbort = null;
    this._heartbeat = null;
    this._batch = [];
    this._batchTimer = null;
    this._running = false;
  }

  /* ---- commands ---- */

  async login(userId, { protocol = '', auth } = {}) {
    const cmd = { type: 'login', userId, protocol };
    if (auth) cmd.auth = auth;
    const reply = await this._send(cmd, { retry: true });
    this.token = reply.token;
    this.userId = reply.userId;
    this.roomId = reply.roomId || null;
    this._start();
    return reply;
  }

  async join(roomId) {
    const reply = await this._send({ type: 'join', roomId });
    this.roomId = roomId;
    return reply;
  }

  async leave() {
    const reply = await this._send({ type: 'leave' });
    this.roomId = null;
    return reply;
  }

  /* Send payload's fields to `to` (null: every other member). With
   * {batch: true} the command waits a few milliseconds for others and
   * they go out in one POST (trickled ICE candidates). */
  signal(to, payload = {}, { batch = false } = {}) {
    const cmd = { ...payload, type: 'signal' };
    if (to) cmd.to = to;
    if (!batch) return this._send(cmd);
    return new Promise((resolve, reject) => {
      this._batch.push({ cmd, resolve, reject });
      if (!this._batchTimer) this._batchTimer = setTimeout(() => this._flush(), 10);
    });
  }

  roomUsers(roomId) {
    return this._send({ type: 'room-users', roomId: roomId || this.roomId });
  }

  ping() {
    return this._send({ type: 'ping', ack: this.lastId });
  }

  async logout() {
    try {
      return await this._send({ type: 'logout' });
    } finally {
      this._stop('closed');
      this.token = null;
      this.roomId = null;
    }
  }

  /* Switch transports on the fly ('ws', 'sse', 'poll' or 'auto'); the
   * event cursor carries over, so nothing is lost or repeated. */
  setTransport(mode) {
    this.mode = mode;
    if (this._running) {
      this._closeReceivers();
      this._receive(this._firstTransport());
    }
  }

  _firstTransport() {
    return this.mode === 'auto' ? 'ws' : this.mode;
  }

  /* ---- sending ---- */

  async _flush() {
    this._batchTimer = null;
    const items = this._batch.splice(0, 64);
    if (this._batch.length) this._batchTimer = setTimeout(() => this._flush(), 0);
    if (!items.length) return;
    try {
      const replies = await this._post(items.map((i) => i.cmd), true);
      items.forEach((item, k) => {
        const r = replies[k];
        if (r && r.success) item.resolve(r);
        else item.reject(new SignalError(r, (r && r.status) || 400));
      });
    } catch (e) {
      items.forEach((item) => item.reject(e));
    }
  }

  async _send(cmd, { retry = true } = {}) {
    return this._post(cmd, retry);
  }

  async _post(body, retry) {
    let delay = 200;
    for (let attempt = 0; ; attempt++) {
      let status = 0;
      let reply = null;
      // Over the open WebSocket when there is one (replies come in order);
      // a socket that drops with the command unanswered: POST it instead.
      reply = this._wsReady && this.token && body.type !== 'login' ? await this._wsCommand(body) : null;
      if (reply !== null) {
        status = Array.isArray(reply) || reply.success ? 200 : reply.status || 400;
      } else try {
        const headers = { 'Content-Type': 'application/json' };
        if (this.token) headers.Authorization = 'Bearer ' + this.token;
        const res = await fetch(this.base + '/cmd', {
          method: 'POST', headers, body: JSON.stringify(body), credentials: 'include',
        });
        status = res.status;
        reply = await res.json().catch(() => null);
      } catch (e) {
        status = 0; // network: the service may be restarting
      }
      if (status === 200) return reply;
      if (status === 401 && this.token) this._sessionLost();
      if (!retry || !RETRY_STATUSES.has(status) || attempt >= 8) throw new SignalError(reply, status);
      await sleep(delay);
      delay = Math.min(delay * 2, 3000);
    }
  }

  /* ---- receiving ---- */

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, transport: this.transport } }));
  }

  _start() {
    if (this._running) return;
    this._running = true;
    this._receive(this._firstTransport());
    clearInterval(this._heartbeat);
    // An open stream already keeps the session alive on the server; the
    // heartbeat also acknowledges what arrived, and survives throttled
    // background tabs because the stream does the real work.
    this._heartbeat = setInterval(() => this.ping().catch(() => {}), this.heartbeatMs);
  }

  _stop(state) {
    this._running = false;
    clearInterval(this._heartbeat);
    this._closeReceivers();
    this._setState(state);
  }

  _wsCommand(body) {
    return new Promise((resolve) => {
      try {
        this._ws.send(JSON.stringify(body));
        this._wsPending.push(resolve);
      } catch (e) {
        resolve(null);
      }
    });
  }

  _closeReceivers() {
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      this._wsReady = false;
      ws.close(1000);
      for (const p of this._wsPending.splice(0)) p(null);
    }
    if (this._es) {
      this._es.close();
      this._es = null;
    }
    if (this._pollAbort) {
      this._pollAbort.abort();
      this._pollAbort = null;
    }
  }

  _sessionLost() {
    if (!this._running && !this.token) return;
    this._stop('closed');
    this.token = null;
    this.dispatchEvent(new CustomEvent('session-lost'));
  }

  _deliver(ev) {
    if (typeof ev.id !== 'number' || ev.id <= this.lastId) return; // nothing twice
    this.lastId = ev.id;
    this.dispatchEvent(new CustomEvent(ev.type, { detail: ev }));
  }

  _receive(kind) {
    this.transport = kind;
    if (kind === 'ws' && typeof WebSocket === 'undefined') kind = this.transport = 'sse';
    if (kind === 'ws') {
      this._openSocket();
    } else if (kind === 'poll' || typeof EventSource === 'undefined') {
      this.transport = 'poll';
      this._pollLoop();
    } else {
      this._openStream();
    }
  }

  _openSocket() {
    this._setState('connecting');
    const url = new URL(`${this.base}/ws?lastEventId=${this.lastId}`, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      if (this.mode === 'auto') this._receive('sse');
      return;
    }
    this._ws = ws;
    let ready = false;
    const giveUp = () => {
      if (this._ws !== ws) return;
      this._closeReceivers();
      if (this.mode === 'auto') this._receive('sse');
      else setTimeout(() => this._running && this._ws === null && this._openSocket(), 1000);
    };
    const openTimer = setTimeout(() => ready || giveUp(), this.openTimeoutMs);
    // An explicit auth, whether or not the cookie already did it on the
    // upgrade (that answer carries "source":"upgrade" and is not ours).
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: this.token, lastEventId: this.lastId }));
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (!Array.isArray(msg) && typeof msg.id === 'number') return this._deliver(msg);
      if (!Array.isArray(msg) && msg.type === 'auth') {
        if (msg.source === 'upgrade') return;
        clearTimeout(openTimer);
        if (msg.success) {
          ready = true;
          this._wsReady = true;
          this._setState('open');
        } else if (msg.status === 401) {
          this._sessionLost();
        } else {
          giveUp();
        }
        return;
      }
      const p = this._wsPending.shift();
      if (p) p(msg);
    };
    ws.onclose = async (e) => {
      clearTimeout(openTimer);
      if (this._ws !== ws) return;
      this._ws = null;
      this._wsReady = false;
      for (const p of this._wsPending.splice(0)) p(null);
      if (!this._running) return;
      if (!ready && this.mode === 'auto') return this._receive('sse');
      this._setState('reconnecting');
      if (e.code === 4001) {
        // The session ended, or another stream of it took over: ask.
        try {
          await this.ping();
        } catch (err) {
          if (err.status === 401) return; // _sessionLost already ran
        }
      }
      setTimeout(() => this._running && this._ws === null && this.transport === 'ws' && this._openSocket(), 1000);
    };
  }

  _openStream() {
    this._setState('connecting');
    let delivered = false;
    let failures = 0;
    // The cookie from login authenticates the stream (EventSource cannot
    // send headers); lastEventId resumes where this client stopped.
    const es = new EventSource(`${this.base}/events?lastEventId=${this.lastId}`, { withCredentials: true });
    this._es = es;
    const fallback = () => {
      if (this._es !== es) return;
      es.close();
      this._es = null;
      if (this.mode === 'auto') this._receive('poll');
      else setTimeout(() => this._running && this._es === null && this._openStream(), 1000);
    };
    const openTimer = setTimeout(() => {
      if (!delivered && es.readyState !== EventSource.OPEN) fallback();
    }, this.openTimeoutMs);
    es.onopen = () => {
      this._setState('open');
    };
    es.onmessage = (m) => {
      delivered = true;
      clearTimeout(openTimer);
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      this._deliver(ev);
    };
    es.onerror = async () => {
      if (this._es !== es) return;
      this._setState('reconnecting');
      failures++;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error such as 401): ask why.
        clearTimeout(openTimer);
        try {
          await this.ping();
        } catch (e) {
          if (e.status === 401) return; // _sessionLost already ran
        }
        if (this._es !== es) return;
        this._es = null;
        if (this.mode === 'auto' && !delivered && failures >= 2) this._receive('poll');
        else setTimeout(() => this._running && this._es === null && this._openStream(), 1000);
        return;
      }
      // EventSource reconnects by itself with Last-Event-ID; a stream that
      // keeps failing before delivering anything is behind a buffering proxy.
      if (this.mode === 'auto' && !delivered && failures >= 3) fallback();
    };
  }

  async _pollLoop() {
    this._setState('connecting');
    let delay = 250;
    while (this._running && this.transport === 'poll') {
      const ctl = new AbortController();
      this._pollAbort = ctl;
      try {
        const headers = this.token ? { Authorization: 'Bearer ' + this.token } : {};
        const res = await fetch(`${this.base}/poll?since=${this.lastId}&timeout=${this.pollTimeout}`, {
          headers, credentials: 'include', signal: ctl.signal,
        });
        if (res.status === 401) {
          this._sessionLost();
          return;
        }
        if (res.status !== 200) throw new Error('poll ' + res.status);
        const body = await res.json();
        this._setState('open');
        delay = 250;
        for (const ev of body.events) this._deliver(ev);
      } catch (e) {
        if (ctl.signal.aborted) return;
        this._setState('reconnecting');
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}
