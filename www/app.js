/*
 * app.js - the call page: joins a room through signal.js and keeps a full
 * mesh of RTCPeerConnections with every other member, each with a chat
 * data channel (works without any device) and, when asked, camera and
 * microphone. The newcomer calls everyone already in the room (it has the
 * list from its join); members answer, adding their camera to the answer,
 * so the first negotiation has a single offerer. Later renegotiations
 * follow the "perfect negotiation" pattern, so two peers that start at once
 * never deadlock.
 *
 * Around the calls it owns what a person sees: the room link (/?room=NAME,
 * copied with one click; name and room remembered in localStorage), a tile
 * per person sized to fill the stage, mute and camera toggles (the track's
 * `enabled`: no renegotiation; the other side is told over the data
 * channel), and the diagnostics panel (transport and why, ping round trip,
 * whether events are held back on the way, the ICE pair per peer, the ICE
 * servers) with a plain-text copy for bug reports. It must never show or
 * copy the session token or a TURN credential.
 */
import { SignalClient } from './signal.js';

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const Q = new URLSearchParams(location.search);
// ICE servers come from the service (sc.iceServers: --stun-uris, and
// --turn-uris with TURN credentials); ?relay=1 allows relayed candidates
// only (a TURN server must carry the call: tests, or a check of the relay).
const RELAY_ONLY = Q.get('relay') === '1';
const iceConfig = () => ({ iceServers: sc.iceServers, iceTransportPolicy: RELAY_ONLY ? 'relay' : 'all' });
const ID_RE = /^[A-Za-z0-9._~@+-]{1,64}$/; // the service's rule for userId and roomId
const TRANSPORTS = { ws: 'WebSocket', sse: 'Server-Sent Events', poll: 'long-poll' };
const SHORT = { ws: 'WebSocket', sse: 'SSE', poll: 'long-poll' };
const WHY = {
  preferred: 'the first choice of automatic mode', forced: 'chosen on the join form',
  'ws-blocked': 'WebSocket blocked on the way', 'sse-buffered': 'streams buffered on the way',
  'no-websocket': 'no WebSocket in this browser', 'no-eventsource': 'no EventSource in this browser',
  outage: 'service restarting', upgraded: 'moved back up', restart: 'server restarting, back shortly',
  'rate-limited': 'too many requests from this address; waiting as the server asked',
};

let sc = null;
let me = null;
let room = null;
let localStream = null;
let statsTimer = null;
const peers = new Map(); // userId -> { pc, dc, polite, makingOffer, ignoreOffer, li, tile, video, ... }
const stateLog = [];     // the last transport changes, for the diagnostics

// localStorage can be off (private modes, policies): the page works without.
const remembered = {
  get: (k) => { try { return localStorage.getItem('signal-fcgi.' + k); } catch (e) { return null; } },
  set: (k, v) => { try { localStorage.setItem('signal-fcgi.' + k, v); } catch (e) { /* not kept */ } },
};

/* ---- messages, banners ---- */

function say(text, who) {
  const li = document.createElement('li');
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = who;
    li.append(b, document.createTextNode(text));
  } else {
    li.className = 'system';
    li.textContent = text;
  }
  // The list scrolls, never the page (on a phone the chat is below the
  // stage), and only when its reader was at the bottom already.
  const list = $('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function showBanner(text) {
  $('banner').textContent = text;
  $('banner').hidden = !text;
}

function formError(text) {
  $('formError').textContent = text;
  $('formError').hidden = !text;
}

let toastTimer = null;
function toast(text) {
  $('toast').textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { $('toast').textContent = ''; }, 5000);
}

/* ---- the room link ---- */

// The link to a room: this page's own address (a folder on a shared host
// included) with ?room= and nothing else, so it works on anyone's network.
function roomLink(name) {
  const u = new URL(location.pathname, location.origin);
  u.searchParams.set('room', name);
  return u.href;
}

// The clipboard API needs a secure context (https, localhost); a page
// opened as http://192.168.x.y falls back to a selected text field.
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.className = 'offscreen';
    document.body.append(ta);
    ta.select();
    let done = false;
    try { done = document.execCommand('copy'); } catch (e2) { done = false; }
    ta.remove();
    return done;
  }
}

async function copyLink() {
  const link = roomLink(room || $('room').value.trim());
  toast(await copyText(link) ? `Link copied: ${link}` : `Copy this link: ${link}`);
}

function showJoinLink() {
  const r = $('room').value.trim();
  $('joinLink').textContent = ID_RE.test(r) ? roomLink(r) : '(a room name first)';
}

function prefill() {
  const asked = Q.get('room');
  if (asked !== null && ID_RE.test(asked)) $('room').value = asked;
  else if (remembered.get('room') && ID_RE.test(remembered.get('room'))) $('room').value = remembered.get('room');
  if (asked !== null && !ID_RE.test(asked))
    formError('The room in this link is not a room name (1 to 64 letters, digits or . _ ~ @ + -).');
  const name = remembered.get('name');
  if (name && ID_RE.test(name)) $('name').value = name;
  const t = Q.get('transport');
  if (t in TRANSPORTS || t === 'auto') $('transport').value = t;
  if (remembered.get('media') !== null) $('media').checked = remembered.get('media') === '1';
  showJoinLink();
  // With a name remembered the page is one key press from the call.
  (name && ID_RE.test(name) ? $('joinBtn') : $('name')).focus();
  if (tabs && name) tabs.postMessage({ ask: 'who' });
}

// The link copied into a second window of this browser: the remembered
// name is the first window's, in a call right now, and the service would
// answer user-exists. Windows in a call say their name when asked, and a
// window still on its form that has that name filled in clears it.
const tabs = typeof BroadcastChannel === 'function' ? new BroadcastChannel('signal-fcgi') : null;
if (tabs) tabs.onmessage = ({ data }) => {
  if (!data || typeof data !== 'object') return;
  if (data.ask === 'who' && sc && me) tabs.postMessage({ live: me });
  else if (typeof data.live === 'string' && !sc && $('name').value === data.live) {
    $('name').value = '';
    $('nameNote').textContent = `${data.live} is in a call in another window of this browser: pick another name for this one.`;
    $('name').focus();
  }
};

/* ---- tiles ---- */

function initial(id) {
  return (id.match(/[A-Za-z0-9]/) || ['?'])[0].toUpperCase();
}

// A colour of its own for each name (ann and alex share an initial), dark
// enough for white text.
function hue(id) {
  let h = 2166136261; // FNV-1a: relA and relB land far apart
  for (const ch of id) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  return `hsl(${h % 360} 45% 32%)`;
}

function newTile(id) {
  const t = document.createElement('div');
  t.className = 'tile';
  t.dataset.peer = id;
  t.dataset.video = 'off';
  t.setAttribute('role', 'group');
  t.setAttribute('aria-label', id);
  t.innerHTML = '<video class="remote" autoplay playsinline></video><div class="avatar" aria-hidden="true"></div>' +
    '<div class="label"><span class="name"></span> <span class="tstate"></span> <span class="mic"></span></div>';
  t.querySelector('.name').textContent = id;
  t.querySelector('.avatar').textContent = initial(id);
  t.querySelector('.avatar').style.background = hue(id);
  $('videos').append(t);
  layout();
  return t;
}

// The microphone part of a label: a level bar, "muted", or "no mic".
function showMic(tile, audio, level) {
  tile.dataset.audio = audio;
  const mic = tile.querySelector('.mic');
  if (audio === 'on') {
    let bar = mic.querySelector('.lvl');
    if (!bar) {
      mic.textContent = '';
      bar = document.createElement('span');
      bar.className = 'lvl';
      bar.setAttribute('aria-hidden', 'true');
      bar.append(document.createElement('i'));
      mic.append(bar);
    }
    // RMS levels of speech are small numbers: a square root spreads them out
    bar.firstChild.style.transform = `scaleX(${Math.min(1, Math.sqrt(level || 0) * 2).toFixed(3)})`;
    tile.classList.toggle('speaking', (level || 0) > 0.01);
  } else {
    mic.textContent = audio === 'muted' ? 'muted' : 'no mic';
    tile.classList.remove('speaking');
  }
}

function updateTile(p, id) {
  const t = p.tile;
  const state = p.pc.connectionState;
  t.dataset.state = state;
  t.querySelector('.tstate').textContent = state === 'connected' ? '' : state;
  const stream = p.video.srcObject;
  const has = (kind) => !!stream && stream.getTracks().some((tr) => tr.kind === kind && tr.readyState === 'live');
  const remote = p.remoteMedia || {};
  const video = has('video') && remote.video !== false;
  t.dataset.video = video ? 'on' : 'off';
  const audio = !has('audio') || remote.audio === null ? 'none' : remote.audio === false ? 'muted' : 'on';
  if (typeof p.level === 'number') t.dataset.level = p.level.toFixed(4);
  showMic(t, audio, p.level);
  t.setAttribute('aria-label', `${id}: ${state}, ` + (audio === 'on' ? 'microphone on' : audio === 'muted' ? 'muted' : 'no microphone') +
    (video ? ', camera on' : ', no video'));
}

function localTrack(kind) {
  return localStream ? localStream.getTracks().find((t) => t.kind === kind) : null;
}

function updateSelf() {
  const t = $('selfTile');
  const a = localTrack('audio');
  const v = localTrack('video');
  t.dataset.peer = me || '';
  t.querySelector('.name').textContent = `${me || ''} (you)`;
  t.querySelector('.avatar').textContent = me ? initial(me) : '';
  t.querySelector('.avatar').style.background = me ? hue(me) : '';
  t.dataset.video = v && v.enabled ? 'on' : 'off';
  showMic(t, !a ? 'none' : a.enabled ? 'on' : 'muted', a && a.enabled ? selfLevel : 0);
  t.setAttribute('aria-label', `${me} (you)`);
  for (const [btn, track, onText, offText, none] of [
    [$('micBtn'), a, 'Mute', 'Unmute', 'No mic'], [$('camBtn'), v, 'Stop video', 'Start video', 'No camera']]) {
    btn.disabled = !track;
    btn.dataset.off = track && !track.enabled ? '1' : '';
    btn.querySelector('span').textContent = !track ? none : track.enabled ? onText : offText;
  }
}

// The grid: the number of columns that gives the biggest tiles of the
// camera's shape in the stage, recomputed when the window or the people
// change. The self-view is not in it: it floats small in a corner.
function layout() {
  const stage = $('videos');
  const tiles = stage.querySelectorAll('.tile:not(.self)');
  const n = tiles.length;
  stage.classList.toggle('alone', n === 0);
  if (!n) return;
  const gap = 8;
  const W = stage.clientWidth - 16;
  const H = stage.clientHeight - 16;
  const aspect = 4 / 3;
  let best = { w: 0, cols: 1 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((W - gap * (cols - 1)) / cols, ((H - gap * (rows - 1)) / rows) * aspect);
    if (w > best.w) best = { w, cols };
  }
  stage.style.setProperty('--cols', best.cols);
  stage.style.setProperty('--tw', `${Math.max(80, Math.floor(best.w))}px`);
  stage.style.setProperty('--th', `${Math.max(60, Math.floor(best.w / aspect))}px`);
}

/* ---- the people list ---- */

function peerRow(id) {
  const li = document.createElement('li');
  li.dataset.peer = id;
  li.innerHTML = '<span class="name"></span><span class="state">new</span>';
  li.querySelector('.name').textContent = id;
  $('peers').append(li);
  return li;
}

function updateRow(p, id) {
  const state = p.pc.connectionState;
  if (!p.li) return;
  const channel = p.dc ? p.dc.readyState : 'none';
  p.li.dataset.state = state;
  p.li.dataset.channel = channel;
  p.li.querySelector('.state').textContent = `${state}, chat ${channel}`;
  if (p.tile) updateTile(p, id);
}

/* ---- the data channel: chat and media state ---- */

// What we send: {"t":"chat","text":...} and {"t":"media","audio":bool|null,
// "video":bool|null} (null: no such device). A bare string is chat too.
function mediaState() {
  const a = localTrack('audio');
  const v = localTrack('video');
  return { t: 'media', audio: a ? a.enabled : null, video: v ? v.enabled : null };
}

function sendCtl(p, obj) {
  if (p.dc && p.dc.readyState === 'open') p.dc.send(JSON.stringify(obj));
}

function onChannelMessage(id, p, data) {
  let msg = null;
  if (typeof data === 'string' && data.startsWith('{')) {
    try { msg = JSON.parse(data); } catch (e) { msg = null; }
  }
  if (!msg || typeof msg !== 'object') return say(String(data), id);
  if (msg.t === 'chat' && typeof msg.text === 'string') return say(msg.text, id);
  if (msg.t === 'media') {
    const v = (x) => (x === true || x === false ? x : null);
    p.remoteMedia = { audio: v(msg.audio), video: v(msg.video) };
    updateTile(p, id);
  }
}

function setupChannel(id, p) {
  p.dc.onopen = () => { updateRow(p, id); say(`${id} connected`); sendCtl(p, mediaState()); };
  p.dc.onclose = () => updateRow(p, id);
  p.dc.onmessage = (m) => onChannelMessage(id, p, m.data);
}

/* ---- peer connections ---- */

// caller: we offer (we are the newcomer); otherwise we wait for their offer.
function addPeer(id, caller = false) {
  if (id === me || peers.has(id)) return peers.get(id);
  const pc = new RTCPeerConnection(iceConfig());
  const p = { pc, dc: null, polite: me < id, makingOffer: false, ignoreOffer: false, li: peerRow(id), tile: newTile(id),
    video: null, queue: Promise.resolve(), early: [], tracksAdded: false, remoteMedia: null, level: null, pair: null };
  p.video = p.tile.querySelector('video');
  p.video.dataset.peer = id;
  peers.set(id, p);
  if (caller) {
    p.dc = pc.createDataChannel('chat');
    setupChannel(id, p);
    addTracks(p);
  } else {
    pc.ondatachannel = ({ channel }) => { p.dc = channel; setupChannel(id, p); updateRow(p, id); };
  }
  pc.onnegotiationneeded = async () => {
    try {
      p.makingOffer = true;
      await pc.setLocalDescription();
      await sc.signal(id, { description: pc.localDescription.toJSON() });
    } catch (e) {
      console.warn('negotiation with', id, e);
    } finally {
      p.makingOffer = false;
    }
  };
  pc.onicecandidate = ({ candidate }) => {
    if (candidate) sc.signal(id, { candidate: candidate.toJSON() }, { batch: true }).catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    updateRow(p, id);
    if (pc.connectionState === 'failed' && !p.saidFailed) {
      p.saidFailed = true;
      say(`The call with ${id} could not connect` + (RELAY_ONLY ? ' through the relay' : '') +
        ' (no network path found). Diagnostics shows the ICE servers in use.');
    }
  };
  // A TURN server that refuses us says why (401: our credential is not
  // one it accepts, e.g. --turn-secret differs from its static-auth-secret).
  pc.onicecandidateerror = (e) => {
    if (!/^turns?:/.test(e.url || '') || p.turnError) return;
    p.turnError = `${e.errorCode} ${e.errorText}`.trim();
    say(`The TURN relay ${e.url} refused us (${p.turnError})` +
      (e.errorCode === 401 ? ': the service\'s TURN secret does not match the relay\'s.' : '.'));
    p.li.dataset.turnError = p.turnError;
  };
  pc.ontrack = ({ track, streams }) => {
    const stream = streams[0] || new MediaStream([track]);
    if (p.video.srcObject !== stream) p.video.srcObject = stream;
    // A track that ends or stops (the peer hung up a device) changes the tile.
    track.onended = track.onmute = track.onunmute = () => updateTile(p, id);
    updateTile(p, id);
  };
  updateRow(p, id);
  return p;
}

function addTracks(p) {
  if (p.tracksAdded || !localStream) return;
  p.tracksAdded = true;
  for (const t of localStream.getTracks()) p.pc.addTrack(t, localStream);
}

function dropPeer(id) {
  const p = peers.get(id);
  if (!p) return;
  p.pc.close();
  p.li.remove();
  p.tile.remove();
  peers.delete(id);
  layout();
  updateDiag();
}

// Signals from one peer are handled one at a time, in order: a candidate
// that arrives in the same batch as its offer must wait for the offer to be
// applied, or addIceCandidate fails and the candidate is lost.
function onSignal({ detail: msg }) {
  if (msg.diag) return onEcho(msg); // the diagnostics' probes: answered at once
  const p = addPeer(msg.from);
  if (!p) return;
  p.queue = p.queue.then(() => handleSignal(msg.from, p, msg));
}

async function handleSignal(id, p, msg) {
  const { pc } = p;
  try {
    if (msg.description) {
      const offerCollision = msg.description.type === 'offer' &&
        (p.makingOffer || pc.signalingState !== 'stable');
      p.ignoreOffer = !p.polite && offerCollision;
      if (p.ignoreOffer) return;
      await pc.setRemoteDescription(msg.description);
      // candidates that came before this description can be used now
      for (const c of p.early.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (msg.description.type === 'offer') {
        addTracks(p); // our camera rides on the answer: no second offer
        await pc.setLocalDescription();
        await sc.signal(id, { description: pc.localDescription.toJSON() });
      }
    } else if (msg.candidate) {
      if (!pc.remoteDescription) {
        p.early.push(msg.candidate); // its description is still on the way
        return;
      }
      try {
        await pc.addIceCandidate(msg.candidate);
      } catch (e) {
        if (!p.ignoreOffer) throw e;
      }
    }
  } catch (e) {
    console.warn('signal from', id, e);
  }
}

/* ---- mute and camera ---- */

// The track's `enabled`: the sender keeps its place in the session (silence
// or black frames go out), so turning it back on needs no renegotiation.
function toggle(kind) {
  const track = localTrack(kind);
  if (!track) return;
  track.enabled = !track.enabled;
  updateSelf();
  const state = mediaState();
  for (const p of peers.values()) sendCtl(p, state);
}

/* ---- statistics: audio levels and the selected ICE pair ---- */

let selfLevel = 0;
let polling = false; // a getStats round slower than the interval is not doubled
async function pollStats() {
  if (polling) return;
  polling = true;
  try {
    await statsRound();
  } finally {
    polling = false;
  }
}

async function statsRound() {
  let own = null;
  for (const [id, p] of peers) {
    let stats;
    try {
      stats = await p.pc.getStats();
    } catch (e) {
      continue; // closed meanwhile
    }
    let pair = null;
    let audio = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      else if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s;
      else if (s.type === 'media-source' && s.kind === 'audio' && typeof s.audioLevel === 'number') own = s.audioLevel;
    });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    const l = pair && stats.get(pair.localCandidateId);
    const r = pair && stats.get(pair.remoteCandidateId);
    p.pair = l && r ? { local: l.candidateType, remote: r.candidateType, protocol: l.relayProtocol || l.protocol,
      rtt: pair.currentRoundTripTime } : null;
    // The level heard from this peer over the last interval: RMS from the
    // energy and duration counters (a muted sender sends silence: ~0).
    if (audio && typeof audio.totalSamplesDuration === 'number') {
      const prev = p.audioStat;
      p.audioStat = { e: audio.totalAudioEnergy || 0, d: audio.totalSamplesDuration };
      if (prev) p.level = p.audioStat.d > prev.d ? Math.sqrt(Math.max(0, p.audioStat.e - prev.e) / (p.audioStat.d - prev.d)) : 0;
    }
    updateTile(p, id);
  }
  selfLevel = own || 0;
  updateSelf();
  updateDiag();
}

/* ---- diagnostics ----
 *
 * Design note. Whether the event stream is held back on the way (a proxy
 * that buffers responses) cannot be read from one side: the page measures
 * it. It sends ECHO_N small signals ECHO_GAP ms apart to one other member,
 * whose page echoes each at once, with how far after the first probe of the
 * round it got this one (its own clock). Probes that reach the peer close
 * together though sent apart mean the peer's stream bunches them; echoes
 * that reach us together while the peer got them apart mean ours does;
 * echoes far slower than the ping (a command's round trip, which no stream
 * carries) mean events are late. Only while the panel is open. */

const ECHO_N = 5;
const ECHO_GAP = 250;
const ECHO_WAIT = 5000;
let echo = null;      // the round under way: {round, peer, sent[], got[], spans[]}
let echoRound = 0;
const echoSeen = new Map(); // from -> {round, first}: the peer's side of a round
let diagTimer = null;

// A member may ask for echoes, not for a flood of them: ECHO_N per round,
// a new round at most every 2 s.
function onEcho(msg) {
  if (msg.diag === 'echo' && typeof msg.from === 'string' && Number.isInteger(msg.round) && Number.isInteger(msg.n) &&
    msg.n >= 0 && msg.n < ECHO_N) {
    const now = performance.now();
    let seen = echoSeen.get(msg.from);
    if (!seen || seen.round !== msg.round) {
      if (seen && now - seen.first < 2000) return;
      echoSeen.set(msg.from, seen = { round: msg.round, first: now, answered: 0 });
    }
    if (++seen.answered > ECHO_N) return;
    if (sc) sc.signal(msg.from, { diag: 'echo-reply', round: msg.round, n: msg.n, span: Math.round(now - seen.first) })
      .catch(() => {});
  } else if (msg.diag === 'echo-reply' && echo && msg.round === echo.round && msg.from === echo.peer &&
    Number.isInteger(msg.n) && msg.n >= 0 && msg.n < ECHO_N) {
    echo.got[msg.n] = performance.now();
    echo.spans[msg.n] = Number(msg.span);
  }
}

function setBuffer(verdict, text) {
  $('diagBuffer').dataset.verdict = verdict;
  $('diagBuffer').textContent = text;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
// how many steps between consecutive values are far shorter than the gap they were sent at
const collapsed = (xs) => xs.slice(1).filter((x, i) => x - xs[i] < ECHO_GAP / 4).length;

let lastProbe = -1e9;
let bunchedBefore = false; // the last round came in bunches
async function probeStream() {
  // at most one round every 3 s: the peer answers one every 2 s (onEcho)
  if (echo || !sc || performance.now() - lastProbe < 3000) return;
  lastProbe = performance.now();
  const peer = [...peers.keys()][0];
  if (!peer) return setBuffer('unmeasured', 'not measured: it takes another person in the room');
  const round = ++echoRound;
  const e = echo = { round, peer, sent: [], got: [], spans: [] };
  if ($('diagBuffer').dataset.verdict === 'unmeasured') $('diagBuffer').textContent = `measuring (echoes through ${peer})...`;
  for (let i = 0; i < ECHO_N; i++) {
    e.sent[i] = performance.now();
    sc.signal(peer, { diag: 'echo', round, n: i }).catch(() => {});
    await sleep(ECHO_GAP);
  }
  const until = performance.now() + ECHO_WAIT;
  while (e.got.filter(Boolean).length < ECHO_N && performance.now() < until && sc) await sleep(100);
  echo = null;
  if (!sc) return;
  const idx = [...Array(ECHO_N).keys()].filter((i) => e.got[i]);
  const ping = sc.rttMs || 0;
  if (!idx.length) {
    bunchedBefore = false;
    return setBuffer('late', `held back: none of ${ECHO_N} events sent to ${peer} came back within ${ECHO_WAIT / 1000} s`);
  }
  const rtt = median(idx.map((i) => e.got[i] - e.sent[i]));
  const where = `(${idx.length} of ${ECHO_N} echoes through ${peer}, ping ${ping} ms)`;
  const bunchedText = collapsed(idx.map((i) => e.spans[i])) >= 2
    ? `buffered on ${peer}'s side: events reach ${peer} in bunches ${where}`
    : collapsed(idx.map((i) => e.got[i])) >= 2
      ? `buffered: events reach you in bunches, something on the way holds your stream ${where}` : null;
  // One round can bunch by chance (a stalled phone or machine, a long-poll
  // that came back late and took two echoes at once); a proxy that buffers
  // bunches every round. So "buffered" stands only when two rounds in a
  // row say so; until then the verdict shown stays as it was.
  const wasBunched = bunchedBefore;
  bunchedBefore = bunchedText !== null;
  if (bunchedText !== null) {
    if (wasBunched) return setBuffer('bunched', bunchedText);
    if ($('diagBuffer').dataset.verdict === 'unmeasured')
      $('diagBuffer').textContent = `measuring again: one round came in bunches ${where}`;
    // the next round now, not at the panel's next 15 s probe (3 s apart at least)
    setTimeout(() => { if (diagTimer) probeStream(); }, 3100);
    return;
  }
  if (rtt > Math.max(1500, 4 * ping + 1000))
    return setBuffer('late', `late: an event takes ${Math.round(rtt)} ms to ${peer} and back ${where}`);
  setBuffer('ok', `not buffered: an event reaches ${peer} and comes back in ${Math.round(rtt)} ms ${where}`);
}

const PAIR_NAMES = { host: 'direct', srflx: 'through a NAT (STUN)', prflx: 'through a NAT', relay: 'relayed (TURN)' };
function pairText(p) {
  if (!p.pair) return 'no candidate pair selected yet';
  const { local, remote, protocol, rtt } = p.pair;
  const kind = local === 'relay' || remote === 'relay' ? 'relay' : local === 'host' && remote === 'host' ? 'host' : local;
  return `${PAIR_NAMES[kind] || kind}: ${local} / ${remote}` + (protocol ? ` (${protocol})` : '') +
    (typeof rtt === 'number' ? `, ${Math.round(rtt * 1000)} ms` : '');
}

function iceText() {
  if (!sc || !sc.iceServers.length) return 'none from the service: direct (host) candidates only';
  const urls = sc.iceServers.flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls]));
  const turn = sc.iceServers.some((s) => s.credential);
  const until = sc.iceExpiresAt ? new Date(sc.iceExpiresAt * 1000).toISOString().slice(11, 16) + ' UTC' : null;
  return urls.join(', ') + (turn ? `; a TURN credential${until ? ` until ${until}` : ''}` : '') +
    (RELAY_ONLY ? '; relayed candidates only (?relay=1)' : '');
}

function transportText() {
  if (!sc || !sc.transport) return 'not connected';
  const why = WHY[sc.reason] || sc.reason || '';
  return `${TRANSPORTS[sc.transport] || sc.transport}, ${sc.state}` + (why ? ` (${why})` : '');
}

function updateDiag() {
  if ($('diag').hidden) return;
  const t = $('diagTransport');
  t.textContent = transportText();
  t.dataset.transport = (sc && sc.transport) || '';
  t.dataset.reason = (sc && sc.reason) || '';
  $('diagRtt').textContent = sc && sc.rttMs !== null ? `${sc.rttMs} ms (a ping over ${sc.transport === 'ws' && sc.state === 'open' ? 'the WebSocket' : 'HTTP POST'})` : 'measuring...';
  $('diagIce').textContent = iceText();
  const list = $('diagPeers');
  const rows = new Map([...list.children].map((li) => [li.dataset.peer, li]));
  for (const [id, p] of peers) {
    let li = rows.get(id);
    if (!li) {
      li = document.createElement('li');
      li.dataset.peer = id;
      list.append(li);
    }
    rows.delete(id);
    li.dataset.pair = p.pair ? `${p.pair.local}/${p.pair.remote}` : '';
    li.textContent = `${id}: ${p.pc.connectionState}, ${pairText(p)}`;
  }
  for (const li of rows.values()) li.remove();
  if (!peers.size && !list.children.length) list.textContent = '';
}

async function pingNow() {
  if (!sc) return;
  await sc.ping().catch(() => {});
  updateDiag();
}

function toggleDiag() {
  const open = $('diag').hidden;
  $('diag').hidden = !open;
  $('diagBtn').setAttribute('aria-expanded', String(open));
  clearInterval(diagTimer);
  diagTimer = null;
  if (!open) return;
  bunchedBefore = false; // rounds count in a row while the panel is open
  updateDiag();
  $('diag').scrollIntoView({ block: 'nearest' }); // below the stage on a phone
  let ticks = 0;
  pingNow().then(probeStream);
  diagTimer = setInterval(() => {
    pingNow();
    if (++ticks % 3 === 0) probeStream();
  }, 5000);
}

// The panel as text for a bug report: no token, no TURN credential.
function diagnosticsText() {
  const lines = [
    `signal-fcgi call page diagnostics, ${new Date().toISOString()}`,
    `page: ${location.href}`,
    `browser: ${navigator.userAgent}`,
    `user: ${me || '-'} in room ${room || '-'}`,
    `signaling: ${transportText()}`,
    `transport changes: ${stateLog.map((s) => `${s.at} ${s.transport}/${s.state}/${s.reason}`).join('; ') || '-'}`,
    `round trip (ping): ${sc && sc.rttMs !== null ? sc.rttMs + ' ms' : '-'}`,
    `event stream: ${$('diagBuffer').textContent}`,
    `ICE servers: ${iceText()}`,
    `local media: ${JSON.stringify(mediaState())}`,
  ];
  for (const [id, p] of peers) {
    lines.push(`peer ${id}: connection ${p.pc.connectionState}, ICE ${p.pc.iceConnectionState}, ${pairText(p)}, ` +
      `chat ${p.dc ? p.dc.readyState : 'none'}, media ${JSON.stringify(p.remoteMedia)}` +
      (p.turnError ? `, TURN error ${p.turnError}` : ''));
  }
  return lines.join('\n') + '\n';
}

async function copyDiag() {
  updateDiag();
  toast(await copyText(diagnosticsText()) ? 'Diagnostics copied: paste them into your bug report.'
    : 'Copying failed: select the panel text instead.');
}

/* ---- joining and leaving ---- */

function explain(e) {
  switch (e.code) {
    case 'room-full': return 'That room is full (5 people at most). Try another room.';
    case 'user-exists': return 'That name is taken in a live session. Pick another name.';
    case 'invalid-field':
      if (e.field === 'userId') return 'Your name: ' + e.message.replace(/^userId: /, '');
      if (e.field === 'roomId') return 'The room: ' + e.message.replace(/^roomId: /, '');
      return e.message;
    case 'rate-limited': return 'Too many attempts; wait a moment and try again.';
    case 'network': return 'The signaling service cannot be reached.';
    case 'banned': return `This name or address is banned for ${e.reply && e.reply.retryAfter ? e.reply.retryAfter + ' more seconds' : 'a while'}.`;
    default: return e.message;
  }
}

// Camera and microphone, else whichever of them there is, else none (chat
// only): a desktop without a camera still talks.
async function getMedia() {
  for (const want of [{ video: true, audio: true }, { audio: true }, { video: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(want);
    } catch (e) {
      if (e.name === 'NotAllowedError') break; // refused: asking again gives the same answer
    }
  }
  return null;
}

function onState({ detail }) {
  const why = WHY[detail.reason];
  const shown = (detail.reason === 'preferred' || detail.reason === 'forced') ? null : why;
  const label = `${SHORT[detail.transport] || detail.transport}: ${detail.state}` + (shown ? ` (${shown})` : '');
  const pill = $('transportState');
  pill.textContent = label;
  pill.dataset.transport = detail.transport;
  pill.dataset.state = detail.state;
  pill.dataset.reason = detail.reason || '';
  pill.classList.toggle('bad', detail.state !== 'open');
  stateLog.push({ at: new Date().toISOString().slice(11, 23), ...detail });
  if (stateLog.length > 20) stateLog.shift();
  showBanner(detail.state === 'reconnecting' ? 'Connection to the signaling service lost; reconnecting...' : '');
  updateDiag();
}

async function join(ev) {
  ev.preventDefault();
  formError('');
  $('nameNote').textContent = '';
  const name = $('name').value.trim();
  const wanted = $('room').value.trim();
  if (!ID_RE.test(name)) return formError('Your name: 1 to 64 letters, digits or . _ ~ @ + -');
  if (!ID_RE.test(wanted)) return formError('The room: 1 to 64 letters, digits or . _ ~ @ + -');
  $('joinBtn').disabled = true;
  try {
    if ($('media').checked && !localStream) {
      localStream = await getMedia();
      if (!localStream) say('No camera or microphone available: chat only.');
    }
    $('localVideo').srcObject = localStream;
    $('localVideo').hidden = !localTrack('video');
    // ?probeMs=N, ?openTimeoutMs=N: how soon auto mode re-tries a better
    // transport, and gives up on one that does not open (tests, debugging)
    const probeMs = Number(Q.get('probeMs')) || undefined;
    const openTimeoutMs = Number(Q.get('openTimeoutMs')) || undefined;
    // The API beside the page (/api/ at the root, DIR/api/ when the page is
    // in a folder: a shared host's bundle, the Debian package's /signal/).
    const base = new URL('api', location.href).pathname;
    sc = new SignalClient({ base, transport: $('transport').value, probeMs, openTimeoutMs });
    sc.addEventListener('signal', onSignal);
    sc.addEventListener('user-joined', ({ detail }) => { say(`${detail.userId} joined`); addPeer(detail.userId); });
    sc.addEventListener('user-left', ({ detail }) => { say(`${detail.userId} left`); dropPeer(detail.userId); });
    sc.addEventListener('state', onState);
    sc.addEventListener('session-lost', () => {
      $('waiting').hidden = true;
      showBanner('Your session has ended (timed out or logged out elsewhere). Leave and join again.');
    });
    sc.addEventListener('events-lost', () => say('Some signaling messages were lost; calls may need a rejoin.'));
    // The operator's admin API: removed from the service, or the room closed.
    sc.addEventListener('kicked', ({ detail }) => {
      for (const id of [...peers.keys()]) dropPeer(id);
      $('waiting').hidden = true; // nobody can be invited into this call any more
      say(`You were removed by the operator: ${detail.reason}`);
      showBanner(`You were removed from the service: ${detail.reason}` +
        (detail.retryAfter ? ` (banned for ${detail.retryAfter} s)` : '') + '. Leave to start over.');
    });
    sc.addEventListener('room-closed', ({ detail }) => {
      for (const id of [...peers.keys()]) dropPeer(id);
      $('waiting').hidden = true;
      say(`The room ${detail.roomId} was closed: ${detail.reason}`);
      showBanner(`The room was closed by the operator: ${detail.reason}. Leave to join another.`);
    });
    // A refreshed TURN credential: the calls use it for any later ICE restart.
    sc.addEventListener('ice', () => {
      for (const p of peers.values()) try { p.pc.setConfiguration(iceConfig()); } catch (e) { /* closed */ }
      updateDiag();
    });
    await sc.login(name, { protocol: 'call-page' });
    me = name;
    const { users } = await sc.join(wanted);
    room = wanted;
    remembered.set('name', name);
    remembered.set('room', room);
    remembered.set('media', $('media').checked ? '1' : '0');
    // The address bar shows this room's link (other parameters kept: a
    // reload behaves the same).
    const q = new URLSearchParams(location.search);
    q.set('room', room);
    history.replaceState(null, '', `${location.pathname}?${q}`);
    $('roomName').textContent = room;
    $('me').textContent = me;
    document.title = `${room} - signal-fcgi call`;
    document.body.classList.add('in-call');
    $('join').hidden = true;
    $('call').hidden = false;
    $('waiting').hidden = false;
    updateSelf();
    layout();
    statsTimer = setInterval(pollStats, 500);
    say(`You joined ${room}` + (users.length > 1 ? ` with ${users.filter((u) => u !== me).join(', ')}` : ''));
    for (const u of users) if (u !== me) addPeer(u, true);
    // focus to the controls, the view left at the top (the stage)
    ($('micBtn').disabled ? $('copyLink') : $('micBtn')).focus({ preventScroll: true });
    window.scrollTo(0, 0);
  } catch (e) {
    formError(explain(e));
    if (sc && sc.token) sc.logout().catch(() => {});
    sc = null;
  } finally {
    $('joinBtn').disabled = false;
  }
}

async function leave() {
  for (const id of [...peers.keys()]) dropPeer(id);
  clearInterval(statsTimer);
  clearInterval(diagTimer);
  statsTimer = diagTimer = null;
  if (sc) await sc.logout().catch(() => {});
  sc = null;
  // the camera light goes off: the devices are asked for again on a rejoin
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  localStream = null;
  $('localVideo').srcObject = null;
  room = null;
  document.body.classList.remove('in-call');
  document.title = 'signal-fcgi call';
  $('call').hidden = true;
  $('join').hidden = false;
  $('diag').hidden = true;
  $('diagBtn').setAttribute('aria-expanded', 'false');
  $('messages').textContent = '';
  stateLog.length = 0;
  showBanner('');
  showJoinLink();
  $('joinBtn').focus();
}

function sendChat(ev) {
  ev.preventDefault();
  const text = $('chatInput').value;
  if (!text) return;
  let sent = 0;
  for (const p of peers.values()) {
    if (p.dc && p.dc.readyState === 'open') {
      p.dc.send(JSON.stringify({ t: 'chat', text }));
      sent++;
    }
  }
  say(text, 'you');
  if (!sent) say('(nobody is connected yet)');
  $('chatInput').value = '';
}

$('join').addEventListener('submit', join);
$('room').addEventListener('input', showJoinLink);
$('leaveBtn').addEventListener('click', leave);
$('chatForm').addEventListener('submit', sendChat);
$('micBtn').addEventListener('click', () => toggle('audio'));
$('camBtn').addEventListener('click', () => toggle('video'));
$('diagBtn').addEventListener('click', toggleDiag);
$('copyDiag').addEventListener('click', copyDiag);
for (const b of document.querySelectorAll('[data-copy-link]')) b.addEventListener('click', copyLink);
new ResizeObserver(layout).observe($('videos'));
window.addEventListener('pagehide', () => { if (sc) navigator.sendBeacon && sc.logout().catch(() => {}); });
prefill();
// for tests and the curious
window.signalApp = { peers, get client() { return sc; }, diagnostics: diagnosticsText, layout };
