/*
 * app.js - the call page: joins a room through signal.js and keeps a full
 * mesh of RTCPeerConnections with every other member, each with a chat
 * data channel (works without any device) and, when asked, camera and
 * microphone. The newcomer calls everyone already in the room (it has the
 * list from its join); members answer, adding their camera to the answer,
 * so the first negotiation has a single offerer. Later renegotiations
 * follow the "perfect negotiation" pattern, so two peers that start at once
 * never deadlock.
 */
import { SignalClient } from './signal.js';

const $ = (id) => document.getElementById(id);
// ICE servers come from the service (sc.iceServers: --stun-uris, and
// --turn-uris with TURN credentials); ?relay=1 allows relayed candidates
// only (a TURN server must carry the call: tests, or a check of the relay).
const RELAY_ONLY = new URLSearchParams(location.search).get('relay') === '1';
const iceConfig = () => ({ iceServers: sc.iceServers, iceTransportPolicy: RELAY_ONLY ? 'relay' : 'all' });

let sc = null;
let me = null;
let localStream = null;
const peers = new Map(); // userId -> { pc, dc, polite, makingOffer, ignoreOffer, li, video }

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
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function showBanner(text) {
  $('banner').textContent = text;
  $('banner').hidden = !text;
}

function formError(text) {
  $('formError').textContent = text;
  $('formError').hidden = !text;
}

function peerRow(id) {
  const li = document.createElement('li');
  li.dataset.peer = id;
  li.innerHTML = '<span class="name"></span><span class="state">new</span>';
  li.querySelector('.name').textContent = id;
  $('peers').append(li);
  return li;
}

function updateRow(p) {
  const state = p.pc.connectionState;
  if (!p.li) return;
  const channel = p.dc ? p.dc.readyState : 'none';
  p.li.dataset.state = state;
  p.li.dataset.channel = channel;
  p.li.querySelector('.state').textContent = `${state}, chat ${channel}`;
}

function setupChannel(id, p) {
  p.dc.onopen = () => { updateRow(p); say(`${id} connected`); };
  p.dc.onclose = () => updateRow(p);
  p.dc.onmessage = (m) => say(m.data, id);
}

// caller: we offer (we are the newcomer); otherwise we wait for their offer.
function addPeer(id, caller = false) {
  if (id === me || peers.has(id)) return peers.get(id);
  const pc = new RTCPeerConnection(iceConfig());
  const p = { pc, dc: null, polite: me < id, makingOffer: false, ignoreOffer: false, li: peerRow(id), video: null,
    queue: Promise.resolve(), early: [], tracksAdded: false };
  peers.set(id, p);
  if (caller) {
    p.dc = pc.createDataChannel('chat');
    setupChannel(id, p);
    addTracks(p);
  } else {
    pc.ondatachannel = ({ channel }) => { p.dc = channel; setupChannel(id, p); updateRow(p); };
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
  pc.onconnectionstatechange = () => updateRow(p);
  // A TURN server that refuses us says why (401: our credential is not
  // one it accepts, e.g. --turn-secret differs from its static-auth-secret).
  pc.onicecandidateerror = (e) => {
    if (!/^turns?:/.test(e.url || '') || p.turnError) return;
    p.turnError = `${e.errorCode} ${e.errorText}`.trim();
    say(`The TURN relay ${e.url} refused us (${p.turnError})` +
      (e.errorCode === 401 ? ': the service\'s TURN secret does not match the relay\'s.' : '.'));
    p.li.dataset.turnError = p.turnError;
  };
  pc.ontrack = ({ streams }) => {
    if (!p.video) {
      p.video = document.createElement('video');
      p.video.className = 'remote';
      p.video.dataset.peer = id;
      p.video.autoplay = true;
      p.video.playsInline = true;
      $('videos').append(p.video);
    }
    p.video.srcObject = streams[0];
  };
  updateRow(p);
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
  if (p.video) p.video.remove();
  peers.delete(id);
}

// Signals from one peer are handled one at a time, in order: a candidate
// that arrives in the same batch as its offer must wait for the offer to be
// applied, or addIceCandidate fails and the candidate is lost.
function onSignal({ detail: msg }) {
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

async function join(ev) {
  ev.preventDefault();
  formError('');
  $('joinBtn').disabled = true;
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  try {
    if ($('media').checked && !localStream) {
      try {
        localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
        $('localVideo').srcObject = localStream;
        $('localVideo').hidden = false;
      } catch (e) {
        say('No camera or microphone available: chat only.');
      }
    }
    // ?probeMs=N, ?openTimeoutMs=N: how soon auto mode re-tries a better
    // transport, and gives up on one that does not open (tests, debugging)
    const q = new URLSearchParams(location.search);
    const probeMs = Number(q.get('probeMs')) || undefined;
    const openTimeoutMs = Number(q.get('openTimeoutMs')) || undefined;
    // The API beside the page (/api/ at the root, DIR/api/ when the page is
    // in a folder: a shared host's bundle, the Debian package's /signal/).
    const base = new URL('api', location.href).pathname;
    sc = new SignalClient({ base, transport: $('transport').value, probeMs, openTimeoutMs });
    sc.addEventListener('signal', onSignal);
    sc.addEventListener('user-joined', ({ detail }) => { say(`${detail.userId} joined`); addPeer(detail.userId); });
    sc.addEventListener('user-left', ({ detail }) => { say(`${detail.userId} left`); dropPeer(detail.userId); });
    sc.addEventListener('state', ({ detail }) => {
      const names = { ws: 'WebSocket', sse: 'SSE', poll: 'long-poll' };
      const why = {
        'ws-blocked': 'WebSocket blocked on the way', 'sse-buffered': 'streams buffered on the way',
        'no-websocket': 'no WebSocket in this browser', 'no-eventsource': 'no EventSource in this browser',
        outage: 'service restarting', upgraded: 'moved back up', restart: 'server restarting, back shortly',
        'rate-limited': 'too many requests from this address; waiting as the server asked',
      }[detail.reason];
      const label = `${names[detail.transport] || detail.transport}: ${detail.state}` + (why ? ` (${why})` : '');
      $('transportState').textContent = label;
      $('transportState').dataset.transport = detail.transport;
      $('transportState').dataset.state = detail.state;
      $('transportState').dataset.reason = detail.reason || '';
      $('transportState').classList.toggle('bad', detail.state !== 'open');
      showBanner(detail.state === 'reconnecting' ? 'Connection to the signaling service lost; reconnecting...' : '');
    });
    sc.addEventListener('session-lost', () => {
      showBanner('Your session has ended (timed out or logged out elsewhere). Leave and join again.');
    });
    sc.addEventListener('events-lost', () => say('Some signaling messages were lost; calls may need a rejoin.'));
    // The operator's admin API: removed from the service, or the room closed.
    sc.addEventListener('kicked', ({ detail }) => {
      for (const id of [...peers.keys()]) dropPeer(id);
      say(`You were removed by the operator: ${detail.reason}`);
      showBanner(`You were removed from the service: ${detail.reason}` +
        (detail.retryAfter ? ` (banned for ${detail.retryAfter} s)` : '') + '. Leave to start over.');
    });
    sc.addEventListener('room-closed', ({ detail }) => {
      for (const id of [...peers.keys()]) dropPeer(id);
      say(`The room ${detail.roomId} was closed: ${detail.reason}`);
      showBanner(`The room was closed by the operator: ${detail.reason}. Leave to join another.`);
    });
    await sc.login(name, { protocol: 'call-page' });
    me = name;
    const { users } = await sc.join(room);
    $('roomName').textContent = room;
    $('me').textContent = me;
    $('join').hidden = true;
    $('call').hidden = false;
    say(`You joined ${room}` + (users.length > 1 ? ` with ${users.filter((u) => u !== me).join(', ')}` : ''));
    for (const u of users) if (u !== me) addPeer(u, true);
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
  if (sc) await sc.logout().catch(() => {});
  sc = null;
  $('call').hidden = true;
  $('join').hidden = false;
  $('messages').textContent = '';
  showBanner('');
}

function sendChat(ev) {
  ev.preventDefault();
  const text = $('chatInput').value;
  if (!text) return;
  let sent = 0;
  for (const p of peers.values()) {
    if (p.dc && p.dc.readyState === 'open') {
      p.dc.send(text);
      sent++;
    }
  }
  say(text, 'you');
  if (!sent) say('(nobody is connected yet)');
  $('chatInput').value = '';
}

$('join').addEventListener('submit', join);
$('leaveBtn').addEventListener('click', leave);
$('chatForm').addEventListener('submit', sendChat);
window.addEventListener('pagehide', () => { if (sc) navigator.sendBeacon && sc.logout().catch(() => {}); });
// for tests and the curious
window.signalApp = { peers, get client() { return sc; } };
