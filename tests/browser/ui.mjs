// ui.mjs - the call page as a person uses it, in headless Chromium with fake
// camera and microphone: the room link (/?room=NAME, copy link, the name
// remembered), three pages forming a grid of three labelled tiles each,
// mute and camera toggles seen from the other side (audio level from the
// receiver's statistics), the diagnostics panel (each forced transport,
// the ping, a buffered event stream detected, "relay" through a real
// coturn), screenshots at laptop and phone width, and axe-core's check of
// the page. Starts its own lighttpd and coturn on free 127.0.0.1 ports,
// prints TAP, stops what it started.
//   node tests/browser/ui.mjs OUTDIR
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const OUT = path.resolve(process.argv[2] || path.join(ROOT, 'tests/out/51-ui'));
mkdirSync(OUT, { recursive: true });
const AXE = path.join(HERE, 'node_modules/axe-core/axe.min.js');

let n = 0;
let failed = 0;
function ok(cond, name, diag) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
  if (!cond && diag) console.log(`# ${String(diag).split('\n').join('\n# ')}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// ---- coturn, then the service handing out its credentials (as calls.mjs 6b) ----
const turnSecret = 'ui-turn-secret-' + process.pid;
const turnPort = await freePort();
writeFileSync(`${OUT}/turnserver.conf`, [
  'listening-ip=127.0.0.1', 'relay-ip=127.0.0.1', `listening-port=${turnPort}`,
  'use-auth-secret', `static-auth-secret=${turnSecret}`, 'realm=signal.test',
  'allow-loopback-peers', 'no-cli', 'no-tls', 'no-dtls', 'no-multicast-peers', 'fingerprint',
  `pidfile=${OUT}/turnserver.pid`, 'log-file=stdout', 'simple-log', '',
].join('\n'));
const turn = spawn('turnserver', ['-c', `${OUT}/turnserver.conf`], { stdio: ['ignore', openSync(`${OUT}/turnserver.log`, 'w'), openSync(`${OUT}/turnserver.log`, 'a')] });
writeFileSync(`${OUT}/turn.secret`, turnSecret + '\n', { mode: 0o600 });
for (let i = 0; i < 100; i++) {
  const up = await new Promise((resolve) => {
    const c = net.connect(turnPort, '127.0.0.1', () => { c.end(); resolve(true); });
    c.on('error', () => resolve(false));
  });
  if (up) break;
  await sleep(100);
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const db = `${OUT}/ui.db`;
rmSync(db, { force: true });
mkdirSync(`${OUT}/run`, { recursive: true });
const server = spawn('lighttpd', ['-D', '-f', `${ROOT}/lighttpd.conf`], {
  env: { ...process.env, SIGNAL_ROOT: ROOT, SIGNAL_BIN: `${ROOT}/build/signal-fcgi`, SIGNAL_RUNDIR: `${OUT}/run`,
    SIGNAL_DB: db, SIGNAL_PROCS: '1', SIGNAL_BIND: '127.0.0.1', PORT: String(port),
    SIGNAL_ARGS: `--turn-secret ${OUT}/turn.secret --turn-uris turn:127.0.0.1:${turnPort}?transport=udp --turn-ttl 600` },
  stdio: ['ignore', openSync(`${OUT}/server.log`, 'w'), openSync(`${OUT}/server.log`, 'a')],
});
let up = false;
for (let i = 0; i < 400 && !up; i++) {
  up = await fetch(`${base}/api/health`).then((r) => r.ok, () => false);
  if (!up) await sleep(50);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
const contexts = [];
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
async function newContext(viewport = LAPTOP) {
  const ctx = await browser.newContext({ viewport });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  contexts.push(ctx);
  return ctx;
}
async function closeAll() {
  while (contexts.length) await contexts.pop().close();
}
// A page of a fresh context at query, joined as name (room from the link
// unless given); media: camera and microphone (the page's default).
async function openPage(name, { query = '', room = null, media = true, viewport = LAPTOP, ctx = null, init = null } = {}) {
  const c = ctx || await newContext(viewport);
  const page = await c.newPage();
  if (init) await page.addInitScript(init);
  page.on('pageerror', (e) => console.log(`# page error (${name}): ${e.message}`));
  await page.goto(`${base}/${query}`);
  await page.fill('#name', name);
  if (room) await page.fill('#room', room);
  await page.setChecked('#media', media);
  await page.click('#joinBtn');
  await page.waitForSelector('#call:not([hidden])', { timeout: 15000 });
  return page;
}
const channelsOpen = (page, names, timeout = 40000) => page.waitForFunction((ns) =>
  ns.every((x) => document.querySelector(`#peers li[data-peer="${x}"][data-channel="open"]`)), names, { timeout });
const clipboard = (page) => page.evaluate(() => navigator.clipboard.readText());
// The highest audio level page's tile for peer shows over ms (the fake
// microphone beeps, so one sample may fall between two beeps).
const maxLevel = (page, peer, ms = 2500) => page.evaluate(async ({ peer, ms }) => {
  let max = 0;
  for (const end = performance.now() + ms; performance.now() < end;) {
    const t = document.querySelector(`#videos .tile[data-peer="${peer}"]`);
    max = Math.max(max, Number(t && t.dataset.level) || 0);
    await new Promise((r) => setTimeout(r, 100));
  }
  return max;
}, { peer, ms });
// The level page received from peer over ms, from the energy counters of
// its inbound audio (RMS over the whole window: one late stats sample of the
// page cannot tip it).
const avgLevel = (page, peer, ms = 2000) => page.evaluate(async ({ peer, ms }) => {
  const read = async () => {
    let a = null;
    (await window.signalApp.peers.get(peer).pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') a = s; });
    return a;
  };
  const a0 = await read();
  await new Promise((r) => setTimeout(r, ms));
  const a1 = await read();
  const d = a1.totalSamplesDuration - a0.totalSamplesDuration;
  return d > 0 ? Math.sqrt(Math.max(0, a1.totalAudioEnergy - a0.totalAudioEnergy) / d) : 0;
}, { peer, ms });
const shownLevel = (page, peer) => page.evaluate((p) => Number(document.querySelector(`#videos .tile[data-peer="${p}"]`).dataset.level), peer);
async function axeCheck(page, label) {
  await page.addScriptTag({ path: AXE });
  const res = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = res.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of res.violations) console.log(`# axe (${label}): ${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
  ok(bad.length === 0, `axe-core finds no serious or critical violation (${label}; ${res.violations.length} lesser)`,
    bad.map((v) => `${v.id}: ${v.help}: ${v.nodes.slice(0, 3).map((x) => x.target.join(' ')).join(', ')}`).join('\n'));
}
// One more try on fresh pages when a scenario fails (WebRTC set-up on a
// busy 2-core machine has its own timing); the first failure is printed.
async function attempt(name, fn) {
  if (process.env.ONLY && !new RegExp(process.env.ONLY).test(name)) return;
  for (let t = 1; t <= 2; t++) {
    try {
      await fn();
      return;
    } catch (e) {
      await closeAll();
      if (t === 2) return ok(false, name, e.stack || e);
      console.log(`# ${name}: first try failed (${String(e.message || e).split('\n')[0]}); trying again`);
    }
  }
}

try {
  ok(up, 'lighttpd and the responder answer /api/health');

  // 1. the room link
  await attempt('the room link', async () => {
    const ctx = await newContext();
    const a = await ctx.newPage();
    await a.goto(`${base}/?room=linkroom`);
    ok((await a.inputValue('#room')) === 'linkroom', '/?room=linkroom opens the join form with that room filled in');
    await a.screenshot({ path: `${OUT}/join-laptop.png` });
    await axeCheck(a, 'join form');
    const bad = await ctx.newPage();
    await bad.goto(`${base}/?room=${encodeURIComponent('no spaces!')}`);
    const said = await bad.textContent('#formError');
    ok((await bad.isVisible('#formError')) && /not a room name/.test(said) && (await bad.inputValue('#room')) === 'demo',
      `a link with a bad room name says so and keeps the default room: "${said}"`);
    await bad.close();
    const phone = await (await newContext(PHONE)).newPage();
    await phone.goto(`${base}/?room=linkroom`);
    await phone.screenshot({ path: `${OUT}/join-phone.png`, fullPage: true });
    await a.fill('#name', 'linkA');
    await a.setChecked('#media', false);
    await a.press('#name', 'Enter'); // the keyboard joins too
    await a.waitForSelector('#call:not([hidden])');
    await a.screenshot({ path: `${OUT}/alone-laptop.png` });
    const joined = await a.evaluate(() => [window.signalApp.client.roomId, location.search]);
    ok(joined[0] === 'linkroom' && /[?&]room=linkroom\b/.test(joined[1]), 'joining puts the page in that room, the address bar shows its link',
      JSON.stringify(joined));
    await a.click('#copyLink');
    const link = await clipboard(a);
    ok(link === `${base}/?room=linkroom`, `"Copy link" puts the room link on the clipboard: ${link}`);
    await a.waitForFunction(() => /Link copied/.test(document.querySelector('#toast').textContent));
    // the copied link, in another window: the same room
    const b = await openPage('linkB', { query: link.slice(base.length + 1), media: false });
    await channelsOpen(a, ['linkB']);
    await channelsOpen(b, ['linkA']);
    ok((await b.evaluate(() => window.signalApp.client.roomId)) === 'linkroom', 'the copied link, opened in a second window, joins the same room; the call connects');
    // the link opened in another window of b's browser, b still in the call:
    // b's remembered name is not offered (the service would say user-exists)
    const b2 = await b.context().newPage();
    await b2.goto(link);
    await b2.waitForFunction(() => /in a call in another window/.test(document.querySelector('#nameNote').textContent));
    ok((await b2.inputValue('#name')) === '' && (await b2.inputValue('#room')) === 'linkroom',
      'a second window of a browser already in the call gets the room but not the name in use: ' + await b2.textContent('#nameNote'));
    await b2.fill('#name', 'linkB2');
    await b2.setChecked('#media', false);
    await b2.click('#joinBtn');
    await channelsOpen(b2, ['linkA', 'linkB']);
    ok(true, '... and joins the call under a name of its own');
    // the name and room are remembered in this browser
    await a.click('#leaveBtn');
    await a.waitForSelector('#join:not([hidden])');
    const again = await ctx.newPage();
    await again.goto(`${base}/`);
    const kept = [await again.inputValue('#name'), await again.inputValue('#room')];
    ok(kept[0] === 'linkA' && kept[1] === 'linkroom', `a new page of this browser remembers the name and the room (${kept})`);
  });
  await closeAll();

  // 2-3. three pages, three labelled tiles each; mute and camera seen from the other side
  await attempt('three pages, tiles, mute', async () => {
    const a = await openPage('ann', { query: '?room=grid' });
    const b = await openPage('ben', { query: '?room=grid' });
    const c = await openPage('cat', { query: '?room=grid', viewport: PHONE });
    const pages = { ann: a, ben: b, cat: c };
    for (const [me, pg] of Object.entries(pages)) await channelsOpen(pg, Object.keys(pages).filter((x) => x !== me));
    for (const [me, pg] of Object.entries(pages)) {
      await pg.waitForFunction(() => [...document.querySelectorAll('#videos .tile:not(.self)')]
        .every((t) => t.dataset.video === 'on' && t.querySelector('video').readyState >= 2), null, { timeout: 20000 });
      const tiles = await pg.evaluate(() => [...document.querySelectorAll('#videos .tile')].map((t) => {
        const r = t.getBoundingClientRect();
        return { peer: t.dataset.peer, label: t.querySelector('.label .name').textContent, self: t.classList.contains('self'),
          w: r.width, h: r.height, x: r.x, y: r.y, mirrored: getComputedStyle(t.querySelector('video')).transform };
      }));
      const others = tiles.filter((t) => !t.self);
      const self = tiles.find((t) => t.self);
      const want = Object.keys(pages).filter((x) => x !== me).sort();
      ok(tiles.length === 3 && JSON.stringify(others.map((t) => t.label).sort()) === JSON.stringify(want) &&
        self && self.label === `${me} (you)`, `${me}: three labelled tiles (${tiles.map((t) => t.label).join(', ')})`, JSON.stringify(tiles));
      const overlap = others.length === 2 && !(others[0].x + others[0].w <= others[1].x || others[1].x + others[1].w <= others[0].x ||
        others[0].y + others[0].h <= others[1].y || others[1].y + others[1].h <= others[0].y);
      const vw = pg.viewportSize().width;
      ok(!overlap && others.every((t) => t.w >= vw * 0.3) && self.w < others[0].w && /matrix\(-1/.test(self.mirrored),
        `${me}: the other two tiles are big and apart, the self-view smaller and mirrored (${others.map((t) => `${Math.round(t.w)}x${Math.round(t.h)}`).join(', ')}; self ${Math.round(self.w)})`,
        JSON.stringify(tiles));
    }
    await a.screenshot({ path: `${OUT}/call-laptop.png` });
    await c.screenshot({ path: `${OUT}/call-phone.png` });
    await c.screenshot({ path: `${OUT}/call-phone-full.png`, fullPage: true });
    ok(true, `screenshots: ${OUT}/call-laptop.png (1280x800), call-phone.png and call-phone-full.png (390x844)`);

    const heard = await maxLevel(b, 'ann');
    ok(heard > 0.05, `ben hears ann: audio level ${heard.toFixed(4)}`);
    await a.focus('#micBtn');
    await a.keyboard.press('Space'); // keyboard-operable
    const focusRing = await a.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    ok(focusRing !== 'none', `the focused button shows its focus (outline ${focusRing})`);
    ok((await a.textContent('#micBtn')).trim() === 'Unmute', 'ann\'s button now offers "Unmute"');
    await b.waitForFunction(() => document.querySelector('#videos .tile[data-peer="ann"]').dataset.audio === 'muted', null, { timeout: 10000 });
    await sleep(1500); // what was on its way before the mute has played out
    const [muted, mutedC] = await Promise.all([avgLevel(b, 'ann'), avgLevel(c, 'ann')]);
    const [shownB, shownC] = [await shownLevel(b, 'ann'), await shownLevel(c, 'ann')];
    ok(muted < 0.01 && mutedC < 0.01 && shownB < 0.01 && shownC < 0.01,
      `ann mutes: ben's and cat's tiles say "muted"; what they receive falls to ${muted.toFixed(4)}, ${mutedC.toFixed(4)} (RMS over 2 s), their meters show ${shownB}, ${shownC}`);
    await a.click('#micBtn');
    await b.waitForFunction(() => document.querySelector('#videos .tile[data-peer="ann"]').dataset.audio === 'on', null, { timeout: 10000 });
    await sleep(600);
    const back = await maxLevel(b, 'ann');
    ok(back > 0.05, `ann unmutes: ben hears her again (level ${back.toFixed(4)}), no renegotiation`);
    await a.click('#camBtn');
    await b.waitForFunction(() => document.querySelector('#videos .tile[data-peer="ann"]').dataset.video === 'off', null, { timeout: 10000 });
    await a.click('#camBtn');
    await b.waitForFunction(() => document.querySelector('#videos .tile[data-peer="ann"]').dataset.video === 'on', null, { timeout: 10000 });
    const states = await a.evaluate(() => [...window.signalApp.peers.values()].map((p) => p.pc.signalingState));
    ok(states.every((s) => s === 'stable'), `the camera off and on again shows on ben's tile, the connections stay ${states}`);
    // for the pictures: ann muted with her camera off, from both sides
    await a.click('#micBtn');
    await a.click('#camBtn');
    await b.waitForFunction(() => { const t = document.querySelector('#videos .tile[data-peer="ann"]');
      return t.dataset.audio === 'muted' && t.dataset.video === 'off'; }, null, { timeout: 10000 });
    await a.screenshot({ path: `${OUT}/call-laptop-muted.png` });
    await b.screenshot({ path: `${OUT}/call-laptop-peer-muted.png` });
    await a.click('#micBtn');
    await a.click('#camBtn');
    await a.click('#diagBtn');
    await a.waitForFunction(() => document.querySelector('#diagPeers li[data-pair*="/"]'), null, { timeout: 10000 });
    await axeCheck(a, 'call with tiles and diagnostics, laptop');
    await c.click('#diagBtn');
    await axeCheck(c, 'call, phone');
  });
  await closeAll();

  // 4. diagnostics: each forced transport named, the ping, the stream check
  await attempt('diagnostics per transport', async () => {
    const names = { ws: 'WebSocket', sse: 'Server-Sent Events', poll: 'long-poll' };
    const pages = {};
    for (const t of Object.keys(names)) pages[t] = await openPage(`diag${t}`, { query: `?room=diag&transport=${t}`, media: false });
    // A proxy that buffers event streams, played in the page: the
    // EventSource opens, but messages come out in bunches every 3 s.
    pages.buf = await openPage('diagbuf', { query: '?room=diag&transport=sse', media: false, init: () => {
      const Real = window.EventSource;
      window.EventSource = function (url) {
        const es = new Real(url);
        const held = [];
        const fake = { onopen: null, onmessage: null, onerror: null, close: () => { clearInterval(timer); es.close(); } };
        es.onopen = (e) => fake.onopen && fake.onopen(e);
        es.onerror = (e) => fake.onerror && fake.onerror(e);
        es.onmessage = (m) => held.push(m);
        const timer = setInterval(() => { for (const m of held.splice(0)) if (fake.onmessage) fake.onmessage(m); }, 3000);
        return fake;
      };
    } });
    pages.phone = await openPage('diagphone', { query: '?room=diag', media: false, viewport: PHONE });
    await channelsOpen(pages.ws, ['diagsse', 'diagpoll', 'diagbuf', 'diagphone']);
    for (const t of ['ws', 'phone']) {
      const pg = pages[t];
      await pg.waitForFunction(() => document.querySelectorAll('#videos .tile').length === 5);
      const fit = await pg.evaluate(() => {
        const stage = document.querySelector('#videos').getBoundingClientRect();
        const r = [...document.querySelectorAll('#videos .tile:not(.self)')].map((t) => t.getBoundingClientRect());
        const inside = r.every((x) => x.left >= stage.left - 1 && x.right <= stage.right + 1 && x.top >= stage.top - 1 && x.bottom <= stage.bottom + 1);
        const apart = r.every((x, i) => r.every((y, j) => i === j || x.right <= y.left + 1 || y.right <= x.left + 1 || x.bottom <= y.top + 1 || y.bottom <= x.top + 1));
        const used = r.reduce((s, x) => s + x.width * x.height, 0) / (stage.width * stage.height);
        return { inside, apart, used: Math.round(used * 100), sizes: r.map((x) => `${Math.round(x.width)}x${Math.round(x.height)}`).join(' ') };
      });
      ok(fit.inside && fit.apart && fit.used >= 45, `five people, ${t === 'ws' ? 'laptop' : 'phone'}: four tiles inside the stage, apart, covering ${fit.used}% of it (${fit.sizes})`, JSON.stringify(fit));
    }
    await pages.phone.screenshot({ path: `${OUT}/grid5-phone.png` });
    for (const [t, pg] of Object.entries(pages)) {
      if (t === 'phone') continue;
      await pg.click('#diagBtn');
      const want = t === 'buf' ? 'sse' : t;
      await pg.waitForFunction(() => /^\d+ ms/.test(document.querySelector('#diagRtt').textContent), null, { timeout: 15000 });
      const shown = await pg.evaluate(() => ({ t: document.querySelector('#diagTransport').dataset.transport,
        text: document.querySelector('#diagTransport').textContent, rtt: document.querySelector('#diagRtt').textContent }));
      ok(shown.t === want && shown.text.startsWith(`${names[want]}, open`) && /chosen on the join form/.test(shown.text),
        `?transport=${want}: the diagnostics name the transport: "${shown.text}"; ping "${shown.rtt}"`, JSON.stringify(shown));
    }
    for (const t of ['ws', 'sse', 'poll']) {
      await pages[t].waitForFunction(() => document.querySelector('#diagBuffer').dataset.verdict !== 'unmeasured', null, { timeout: 30000 });
      const v = await pages[t].evaluate(() => [document.querySelector('#diagBuffer').dataset.verdict, document.querySelector('#diagBuffer').textContent]);
      ok(v[0] === 'ok', `${t}: events are not held back: "${v[1]}"`, v.join(' '));
    }
    await pages.buf.waitForFunction(() => document.querySelector('#diagBuffer').dataset.verdict !== 'unmeasured', null, { timeout: 30000 });
    const vb = await pages.buf.evaluate(() => [document.querySelector('#diagBuffer').dataset.verdict, document.querySelector('#diagBuffer').textContent]);
    ok(vb[0] === 'bunched' || vb[0] === 'late', `a buffered event stream is detected: "${vb[1]}"`, vb.join(' '));
    await pages.sse.click('#copyDiag');
    const text = await clipboard(pages.sse);
    const token = await pages.sse.evaluate(() => window.signalApp.client.token);
    const cred = await pages.sse.evaluate(() => window.signalApp.client.iceServers.map((s) => s.credential).filter(Boolean));
    ok(/signaling: Server-Sent Events, open/.test(text) && /round trip \(ping\): \d+ ms/.test(text) && /peer diagws: /.test(text) &&
      /ICE servers: turn:127\.0\.0\.1/.test(text) && !text.includes(token) && cred.length === 1 && !text.includes(cred[0]),
      '"Copy diagnostics" puts the panel on the clipboard as text, without the token or the TURN credential', text);
    await pages.buf.screenshot({ path: `${OUT}/diagnostics-laptop.png` });
  });
  await closeAll();

  // 5. through the TURN relay only: the diagnostics say "relay"
  await attempt('diagnostics show relay', async () => {
    const a = await openPage('relA', { query: '?room=relayed&relay=1', media: false });
    const b = await openPage('relB', { query: '?room=relayed&relay=1', media: false, viewport: PHONE });
    await channelsOpen(a, ['relB']);
    await channelsOpen(b, ['relA']);
    await a.click('#diagBtn');
    await b.click('#diagBtn');
    for (const [pg, peer] of [[a, 'relB'], [b, 'relA']]) {
      await pg.waitForFunction((p) => /relay/.test((document.querySelector(`#diagPeers li[data-peer="${p}"]`) || {}).dataset?.pair || ''),
        peer, { timeout: 15000 });
      const row = await pg.evaluate((p) => { const li = document.querySelector(`#diagPeers li[data-peer="${p}"]`); return [li.dataset.pair, li.textContent]; }, peer);
      const ice = await pg.textContent('#diagIce');
      ok(row[0] === 'relay/relay' && /relay/.test(row[1]) && /turn:127\.0\.0\.1/.test(ice) && /relayed candidates only/.test(ice),
        `through coturn the diagnostics say "${row[1]}"; ICE servers "${ice}"`, JSON.stringify(row));
    }
    await b.screenshot({ path: `${OUT}/diagnostics-phone.png`, fullPage: true });
  });
  await closeAll();
} finally {
  await browser.close();
  server.kill('SIGTERM');
  turn.kill('SIGTERM');
  await Promise.all([server, turn].map((p) => new Promise((r) => { if (p.exitCode !== null || p.signalCode) r(); else p.once('exit', r); })));
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
