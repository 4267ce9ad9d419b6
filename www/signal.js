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
 *   sc.addEventListener('kicked', (e) => ...);                 // {reason, retryAfter?}: the operator
 *                                                              // ended the session (the client stops)
 *   sc.addEventListener('room-closed', (e) => ...);            // {roomId, reason}: you are in no room now
 *   sc.addEventListener('reconnect', (e) => ...);              // {after, transport}: the server drains
 *                                                              // (a restart); back in `after` ms
 *   await sc.login('alice', { protocol: 'demo', auth });       // auth: from your backend, if required
 *   const { users } = await sc.join('room1');                  // every member, you included
 *   await sc.signal('bob', { description });                   // to one peer
 *   sc.signal('bob', { candidate }, { batch: true });          // trickled ICE: sent together
 *   await sc.signal(null, { hello: 1 });                       // to everyone else in the room
 *   await sc.roomUsers('room1'); await sc.leave(); await sc.logout();
 *   new RTCPeerConnection({ iceServers: sc.iceServers });     // STUN/TURN the service hands out
 *   sc.addEventListener('ice', (e) => ...);                    // {iceServers}: refreshed before expiry
 *   sc.transport, sc.state, sc.reason; sc.rttMs                // what 'state' said last; the last ping's
 *                                                              // round trip (ms)
 *
 * Options: base ('/api'), transport ('auto' | 'ws' | 'sse' | 'poll'),
 * heartbeatMs (20000), pollTimeout (25 s), openTimeoutMs (5000), probeMs
 * (15000). 'auto' tries a WebSocket first (commands then go over it too),
 * then SSE, then long-poll. A transport that fails while /api/health
 * answers is refused or buffered on the way: after two such failures the
 * client steps down, and probes the step above after probeMs (doubling, up
 * to 5 minutes), moving back up when it works. A failure while the service
 * does not answer is an outage (a restart): the same transport is retried
 * with backoff. The 'state' event's detail is {state, transport, reason}:
 * reason is 'preferred' or 'forced' (the first choice), 'ws-blocked',
 * 'sse-buffered', 'no-websocket', 'no-eventsource' (why a fall back),
 * 'upgraded' (a probe moved back up), 'outage' (while reconnecting),
 * 'restart' (the server is draining for a restart and said when to come
 * back: {"type":"reconnect","after":ms}; the client waits that long, then
 * reconnects the same transport from its cursor), or
 * 'rate-limited' (the address is over its rate: the same transport again
 * after the server's Retry-After, spread; commands refused so are resent
 * after it too, up to 8 times).
 *
 * Every receiver is bound to this client's session by an explicit
 * credential, never by the browser's cookie (shared by all its windows):
 * the token in the WebSocket's auth message, a one-use ticket for
 * EventSource, the Authorization header for POST and long-poll. No token
 * is ever put in a URL.
 *
 * Delivery: every event carries an id; the client keeps the highest one it
 * has seen, ignores anything at or below it (nothing twice) and resumes from
 * it on every reconnect, on either transport (nothing lost). Heartbeats
 * carry it as "ack", so the server can free what was delivered.
 *
 * Commands run exactly once: each gets a "cid" (128 random bits) when it
 * is made, kept through every retry and every change of transport (a
 * command lost with its WebSocket is re-sent by POST under the same cid),
 * so a retry of a command whose answer was lost is answered from the
 * server's stored reply ("replayed": true) instead of delivering twice.
 * That makes every retry safe: commands that fail on the network (or with
 * 500/502/503/504: lighttpd answers 500 when a responder dies mid-request)
 * are retried with backoff; a 401 ends the session: 'session-lost' is
 * dispatched and nothing loops.
 * Errors reject with an Error whose .code is the server's error code
 * ('room-full', 'user-exists', ...) and .status the HTTP status; for
 * 'invalid-field', .field names the field and .message says its rule.
 */

const RETRY_STATUSES = new Set([0, 500, 502, 503, 504]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// How long to wait after a 429 rate-limited: the server's Retry-After
// (seconds, in the reply as retryAfter or the header), spread over up to
// twice that, so an office refused together does not come back together.
const rateWaitMs = (reply, res) => {
  const s = Number((reply && reply.retryAfter) || (res && res.headers.get('Retry-After'))) || 1;
  return Math.min(s, 60) * 1000 * (1 + Math.random());
};

// An idempotency key: 128 random bits as 32 hex digits (a login without a
// token needs at least 16 bytes: there it stands in for a secret).
function newCid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
// Give each command that has none its cid, once: a retry sends the same
// objects, so the same keys.
function keyed(body) {
  for (const cmd of Array.isArray(body) ? body : [body]) if (!cmd.cid) cmd.cid = newCid();
  return body;
}

export class SignalError extends Error {
  constructor(reply, status) {
    super((reply && reply.msg) || `request failed (${status})`);
    this.code = (reply && reply.error) || 'network';
    this.status = status;
    // invalid-field: which field was refused; .message says why.
    if (reply && reply.field) this.field = reply.field;
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
    this.probeMs = opts.probeMs || 15000;
    this.token = null;
    this.userId = null;
    this.roomId = null;
    this.lastId = 0;
    // ICE servers from the service (--stun-uris, --turn-uris with TURN
    // credentials), in RTCPeerConnection's shape; [] when it hands out none.
    this.iceServers = [];
    this.iceExpiresAt = null; // Unix seconds: when the TURN credential ends
    this.rttMs = null;        // the last ping's round trip, ms
    this._iceTimer = null;
    this.transport = null; // 'ws' | 'sse' | 'poll' while receiving
    this.state = 'closed';
    this.reason = null;    // why this transport (set by _receive and _adopt)
    this._es = null;
    this._ws = null;
    this._wsReady = false;  // authenticated: commands may use it
    this._wsPending = [];   // reply callbacks, in command order
    this._pollAbort = null;
    this._pollGen = 0;      // a newer poll loop (or a switch away) ends the older
    this._streamGen = 0;    // likewise for EventSource (re)connects
    this._probing = null;   // a WebSocket or EventSource trying the step above
    this._probeTimer = null;
    this._probeDelay = this.probeMs; // the next probe's wait: doubles, reset on a climb
    this._probeWait = null; // a promise while a probe decides (see _probeStarted)
    this._retryTimer = null;
    this._strikes = 0;      // failures of this transport while the service answered
    this._outages = 0;
    this._shown = null;     // the last state event, so none is sent twice
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
    this._setIce(reply);
    this._start();
    return reply;
  }

  /* Fresh ICE servers (a new TURN credential): done by itself at 80% of a
   * credential's life; returns the new list. */
  async refreshIce() {
    const reply = await this._send({ type: 'ice' });
    this._setIce(reply);
    return this.iceServers;
  }

  _setIce(reply) {
    this.iceServers = reply.iceServers || [];
    this.iceExpiresAt = reply.iceExpiresAt || null;
    clearTimeout(this._iceTimer);
    this._iceTimer = null;
    if (reply.iceExpiresAt && this.token) {
      const left = reply.iceExpiresAt * 1000 - Date.now();
      const ms = Math.min(Math.max(left * 0.8, 30000), 2 ** 31 - 1);
      this._iceTimer = setTimeout(() => this.refreshIce().catch(() => {}), ms);
    }
    this.dispatchEvent(new CustomEvent('ice', { detail: { iceServers: this.iceServers } }));
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

  /* A heartbeat; this.rttMs is then its round trip in ms (the command
   * path: over the WebSocket when one is open, else a POST; retries
   * included, as the user lived them). */
  async ping() {
    const t0 = performance.now();
    const reply = await this._send({ type: 'ping', ack: this.lastId });
    this.rttMs = Math.round(performance.now() - t0);
    return reply;
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
      this._probeDelay = this.probeMs;
      this._receive(this._firstTransport(), mode === 'auto' ? 'preferred' : 'forced');
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
    keyed(body);
    let delay = 200;
    for (let attempt = 0; ; attempt++) {
      let status = 0;
      let reply = null;
      let res = null;
      // Over the open WebSocket when there is one (replies come in order);
      // a socket that drops with the command unanswered: POST it instead.
      reply = this._wsReady && this.token && body.type !== 'login' ? await this._wsCommand(body) : null;
      if (reply !== null) {
        status = Array.isArray(reply) || reply.success ? 200 : reply.status || 400;
      } else try {
        const headers = { 'Content-Type': 'application/json' };
        if (this.token) headers.Authorization = 'Bearer ' + this.token;
        res = await fetch(this.base + '/cmd', {
          method: 'POST', headers, body: JSON.stringify(body), credentials: 'include',
        });
        status = res.status;
        reply = await res.json().catch(() => null);
      } catch (e) {
        status = 0; // network: the service may be restarting
      }
      if (status === 200) return reply;
      if (status === 401 && this.token) this._sessionLost();
      // Too many requests from this address (a shared one: an office, a
      // carrier's NAT): wait as told and send it again. A full mailbox
      // (also 429) is the application's to decide.
      if (retry && status === 429 && reply && reply.error === 'rate-limited' && attempt < 8) {
        await sleep(rateWaitMs(reply, res));
        continue;
      }
      if (!retry || !RETRY_STATUSES.has(status) || attempt >= 8) throw new SignalError(reply, status);
      // A draining server says when to come back (another process, or the
      // restarted one, will answer then).
      const after = reply && reply.error === 'draining' && reply.retryAfter;
      await sleep(after ? Math.min(after * 1000, 30000) : delay);
      delay = Math.min(delay * 2, 3000);
    }
  }

  /* ---- receiving ----
   *
   * Design note. Every receiver is bound to this client's own session by an
   * explicit credential, never by the cookie (which two windows of one
   * browser share, so it names whoever logged in last there): a WebSocket
   * authenticates with an auth message carrying the token, an EventSource
   * opens with a one-use ticket (the "ticket" command; EventSource cannot
   * send headers, and a token in a URL would land in access logs), a
   * long-poll sends the Authorization header. A used ticket cannot be
   * replayed, so this client reconnects its EventSource itself, with a
   * fresh ticket, instead of letting the browser retry the old URL.
   *
   * In 'auto' mode the ladder is WebSocket, SSE, long-poll. A receiver that
   * fails is not yet a verdict on the network: the client asks /api/health.
   * No answer means the service is restarting (an outage): it retries the
   * same transport with backoff. An answer means the transport itself is
   * refused or buffered on the way; after two such failures it steps down,
   * and later probes the step above (probeMs, doubling up to 5 minutes),
   * moving back up when the probe authenticates. One event cursor (lastId)
   * serves every transport, and the server's "a newer stream of a session
   * ends the older" makes a switch clean: nothing is lost, and what two
   * receivers both deliver is dropped by id. */

  /* `reason` says why this transport (this.reason), or 'outage' while the
   * service does not answer. */
  _setState(state, reason = this.reason) {
    const key = `${state}/${this.transport}/${reason}`;
    if (this._shown === key) return;
    this._shown = key;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, transport: this.transport, reason } }));
  }

  _start() {
    if (this._running) return;
    this._running = true;
    this._receive(this._firstTransport(), this.mode === 'auto' ? 'preferred' : 'forced');
    clearInterval(this._heartbeat);
    // An open stream already keeps the session alive on the server; the
    // heartbeat also acknowledges what arrived, and survives throttled
    // background tabs because the stream does the real work.
    this._heartbeat = setInterval(() => this.ping().catch(() => {}), this.heartbeatMs);
  }

  _stop(state) {
    this._running = false;
    clearInterval(this._heartbeat);
    clearTimeout(this._iceTimer);
    this._iceTimer = null;
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

  _closeSocket() {
    if (!this._ws) return;
    const ws = this._ws;
    this._ws = null;
    this._wsReady = false;
    ws.close(1000);
    for (const p of this._wsPending.splice(0)) p(null);
  }

  _closeStream() {
    if (!this._es) return;
    this._es.close();
    this._es = null;
  }

  _closePoll() {
    this._pollGen++;
    if (this._pollAbort) {
      this._pollAbort.abort();
      this._pollAbort = null;
    }
  }

  _closeReceivers() {
    clearTimeout(this._retryTimer);
    clearTimeout(this._probeTimer);
    this._retryTimer = this._probeTimer = null;
    if (this._probing) {
      this._probing.close();
      this._probing = null;
    }
    this._closeSocket();
    this._closeStream();
    this._closePoll();
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
    // The operator's admin API: a kicked session is over (its token is
    // dead and the server ends the stream; nothing reconnects), a closed
    // room leaves this client in none.
    if (ev.type === 'room-closed' && ev.roomId === this.roomId) this.roomId = null;
    if (ev.type === 'kicked') { // stopped first: 'kicked' is the last word
      this._stop('closed');
      this.token = null;
      this.roomId = null;
    }
    this.dispatchEvent(new CustomEvent(ev.type, { detail: ev }));
  }

  /* The server drains (a restart): it said when to come back. Close this
   * receiver without counting a failure, wait `after` ms (each client got
   * its own delay, so they do not all return at once), then reconnect the
   * same transport from the cursor. */
  _reconnectLater(kind, after) {
    if (!this._running || this.transport !== kind) return;
    const ms = Math.max(0, Math.min(Number(after) || 0, 300000));
    if (kind === 'ws') {
      const ws = this._ws;
      this._ws = null; // its close is ours, not a failure
      this._wsReady = false;
      for (const p of this._wsPending.splice(0)) p(null); // resent by POST
      if (ws) ws.close(1000);
    } else if (kind === 'sse') {
      this._streamGen++;
      this._closeStream();
    }
    this._setState('reconnecting', 'restart');
    this.dispatchEvent(new CustomEvent('reconnect', { detail: { after: ms, transport: kind } }));
    if (kind !== 'poll') this._retry(kind, ms);
    return ms;
  }

  /* The best transport this browser has, from kind down. */
  _available(kind) {
    if (kind === 'ws' && typeof WebSocket === 'undefined') return this._available('sse');
    if (kind === 'sse' && typeof EventSource === 'undefined') return 'poll';
    return kind;
  }

  _receive(kind, reason) {
    const have = this._available(kind);
    if (have !== kind) reason = kind === 'ws' && have !== 'poll' ? 'no-websocket' : 'no-eventsource';
    this.transport = have;
    this.reason = reason;
    this._strikes = 0;
    if (have === 'ws') this._openSocket();
    else if (have === 'sse') this._openStream();
    else this._pollLoop();
    this._scheduleProbe();
  }

  /* Does the service answer at all? (No: it is restarting, not blocked.) */
  async _serviceUp() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 3000);
    try {
      const res = await fetch(`${this.base}/health`, { cache: 'no-store', signal: ctl.signal });
      return res.ok;
    } catch (e) {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /* The receiver of `kind` failed; `opened`: it had worked before. Decide
   * between an outage (same transport, backoff) and a refusal on the way
   * (auto: a step down after two). */
  async _failed(kind, opened) {
    if (!this._running || this.transport !== kind) return;
    this._setState('reconnecting');
    const up = await this._serviceUp();
    if (!this._running || this.transport !== kind) return;
    if (!up) {
      this._outages++;
      this._setState('reconnecting', 'outage');
      this._retry(kind, Math.min(500 * 2 ** Math.min(this._outages, 4), 8000));
      return;
    }
    this._outages = 0;
    if (this.mode === 'auto' && !opened && kind !== 'poll' && ++this._strikes >= 2) {
      this._receive(kind === 'ws' ? 'sse' : 'poll', kind === 'ws' ? 'ws-blocked' : 'sse-buffered');
      return;
    }
    this._retry(kind, opened ? 500 : 1000);
  }

  _retry(kind, ms) {
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._running || this.transport !== kind) return;
      if (kind === 'ws') this._openSocket();
      else if (kind === 'sse') this._openStream();
      else this._pollLoop();
    }, ms);
  }

  /* After a fall back in auto mode: try the step above, later and later. */
  _scheduleProbe() {
    clearTimeout(this._probeTimer);
    this._probeTimer = null;
    const ladder = ['ws', 'sse', 'poll'];
    const above = ladder.slice(0, ladder.indexOf(this.transport)).reverse()
      .find((k) => this._available(k) === k);
    if (this.mode !== 'auto' || !above) return;
    const delay = this._probeDelay;
    this._probeDelay = Math.min(delay * 2, 300000);
    this._probeTimer = setTimeout(() => {
      this._probeTimer = null;
      if (!this._running) return;
      if (above === 'ws') this._openSocket({ probe: true });
      else this._openStream({ probe: true });
    }, delay);
  }

  /* While a probe is deciding, the long-poll holds back its next request:
   * a poll sent meanwhile would take the session's stream back from the
   * probe the moment it attached (the newest stream of a session wins). */
  _probeStarted() {
    let done;
    this._probeWait = new Promise((r) => { done = r; });
    return () => {
      this._probeWait = null;
      done();
    };
  }

  /* A probe authenticated: it becomes the receiver, the old one goes. */
  _adopt(kind) {
    this._probing = null;
    if (kind === 'ws') {
      this._closeStream();
      this._closePoll();
    } else {
      this._closePoll();
    }
    clearTimeout(this._retryTimer);
    this.transport = kind;
    this.reason = 'upgraded';
    this._strikes = 0;
    this._probeDelay = this.probeMs;
    this._scheduleProbe();
  }

  _openSocket({ probe = false } = {}) {
    if (!probe) this._setState('connecting');
    const url = new URL(`${this.base}/ws`, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      if (probe) this._scheduleProbe();
      else this._failed('ws', false);
      return;
    }
    if (probe) this._probing = ws;
    else this._ws = ws;
    const settled = probe ? this._probeStarted() : () => {};
    let ready = false;
    const openTimer = setTimeout(() => ready || ws.close(), this.openTimeoutMs);
    // The token travels in the first message, not the URL; the server never
    // attaches a socket by the cookie alone.
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: this.token, lastEventId: this.lastId }));
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (!Array.isArray(msg) && typeof msg.id === 'number') return this._deliver(msg);
      if (!Array.isArray(msg) && msg.type === 'reconnect' && ready && this._ws === ws) {
        this._reconnectLater('ws', msg.after);
        return;
      }
      if (!Array.isArray(msg) && msg.type === 'auth' && !ready) {
        clearTimeout(openTimer);
        settled();
        if (msg.success) {
          ready = true;
          if (this._probing === ws) {
            this._adopt('ws');
            this._ws = ws;
            this._setState('open');
          } else {
            this._setState('open');
          }
          this._wsReady = true;
          this._outages = 0;
        } else if (msg.status === 401) {
          this._sessionLost();
        } else {
          ws.close();
        }
        return;
      }
      const p = this._wsPending.shift();
      if (p) p(msg);
    };
    ws.onclose = async (e) => {
      clearTimeout(openTimer);
      settled();
      if (this._probing === ws) {
        this._probing = null;
        if (this._running) this._scheduleProbe();
        return;
      }
      if (this._ws !== ws) return;
      this._ws = null;
      this._wsReady = false;
      for (const p of this._wsPending.splice(0)) p(null);
      if (!this._running) return;
      if (e.code === 4001) {
        // The session ended, or another stream of it took over: ask.
        try {
          await this.ping();
        } catch (err) {
          if (err.status === 401) return; // _sessionLost already ran
        }
      }
      this._failed('ws', ready);
    };
  }

  /* A one-use ticket for the next EventSource: {ticket}, or {wait: ms}
   * when the address is over its rate, or null (the request failed). */
  async _ticket() {
    try {
      const reply = await this._post({ type: 'ticket' }, false);
      return { ticket: reply.ticket };
    } catch (e) {
      if (e.code === 'rate-limited') return { wait: rateWaitMs(e.reply) };
      return null;
    }
  }

  async _openStream({ probe = false } = {}) {
    if (!probe) this._setState('connecting');
    const gen = probe ? this._streamGen : ++this._streamGen;
    // Held from before the ticket is asked for: a poll already on its way
    // reaches the server before the stream can claim the session.
    const settled = probe ? this._probeStarted() : () => {};
    const got = await this._ticket();
    const stale = () => !this._running || (probe ? this.transport !== 'poll' : gen !== this._streamGen || this.transport !== 'sse');
    if (stale()) return settled();
    if (!got || got.wait) {
      settled();
      if (probe) this._scheduleProbe();
      else if (got) this._rateLimited('sse', got.wait);
      else if (this.token) this._failed('sse', false);
      return;
    }
    const es = new EventSource(`${this.base}/events?ticket=${got.ticket}&lastEventId=${this.lastId}`);
    let refusedMs = 0; // the server refused this stream (rate-limited): wait as long
    if (probe) this._probing = es;
    else this._es = es;
    let opened = false;
    const openTimer = setTimeout(() => opened || (es.onerror && es.onerror()), this.openTimeoutMs);
    es.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      settled();
      this._outages = 0;
      if (this._probing === es) {
        this._adopt('sse');
        this._streamGen++;
        this._es = es;
        this._setState('open');
      } else {
        this._setState('open');
      }
    };
    es.onmessage = (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (ev.type === 'reconnect' && typeof ev.id !== 'number') {
        if (this._es === es) this._reconnectLater('sse', ev.after);
        else if (es.onerror) es.onerror(); // a probe: it did not work out
        return;
      }
      // A stream refused for the rate of this address comes as a 200
      // event stream (EventSource gives up on anything else) carrying one
      // error event without an id, then ends: see docs/protocol.md.
      if (ev.type === 'error' && ev.error === 'rate-limited') refusedMs = rateWaitMs(ev);
      else this._deliver(ev);
    };
    // Any error ends this EventSource: its ticket is used, so the browser's
    // own retry of the same URL could only fail. We reconnect with a new one.
    es.onerror = () => {
      clearTimeout(openTimer);
      settled();
      es.onerror = es.onopen = es.onmessage = null;
      es.close();
      if (this._probing === es) {
        this._probing = null;
        if (this._running) this._scheduleProbe();
        return;
      }
      if (this._es !== es) return;
      this._es = null;
      if (refusedMs) this._rateLimited('sse', refusedMs);
      else this._failed('sse', opened);
    };
  }

  /* The receiver was refused for the rate of this address: not an outage
   * and not a proxy in the way, so no strike and no step down; the same
   * transport again after the wait the server asked for. */
  _rateLimited(kind, ms) {
    if (!this._running || this.transport !== kind) return;
    this._setState('reconnecting', 'rate-limited');
    this._retry(kind, ms);
  }

  async _pollLoop() {
    this._setState('connecting');
    const gen = ++this._pollGen;
    let delay = 250;
    while (this._running && this.transport === 'poll' && gen === this._pollGen) {
      if (this._probeWait) await Promise.race([this._probeWait, sleep(this.openTimeoutMs + 1000)]);
      if (!this._running || this.transport !== 'poll' || gen !== this._pollGen) return;
      const ctl = new AbortController();
      this._pollAbort = ctl;
      try {
        const headers = this.token ? { Authorization: 'Bearer ' + this.token } : {};
        const res = await fetch(`${this.base}/poll?since=${this.lastId}&timeout=${this.pollTimeout}`, {
          headers, signal: ctl.signal,
        });
        if (res.status === 401) {
          this._sessionLost();
          return;
        }
        if (res.status === 429) {
          const reply = await res.json().catch(() => null);
          this._setState('reconnecting', 'rate-limited');
          await sleep(rateWaitMs(reply, res));
          continue;
        }
        if (res.status !== 200) throw new Error('poll ' + res.status);
        const body = await res.json();
        if (gen !== this._pollGen) return;
        this._setState('open');
        delay = 250;
        let after = null;
        for (const ev of body.events) {
          if (ev.type === 'reconnect' && typeof ev.id !== 'number') after = ev.after;
          else this._deliver(ev);
        }
        if (after !== null) await sleep(this._reconnectLater('poll', after) || 0);
      } catch (e) {
        if (ctl.signal.aborted || gen !== this._pollGen) return;
        const up = await this._serviceUp();
        if (gen !== this._pollGen || this.transport !== 'poll') return; // moved on meanwhile
        this._setState('reconnecting', up ? this.reason : 'outage');
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}
