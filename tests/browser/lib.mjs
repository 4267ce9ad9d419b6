// lib.mjs - what the browser tests share: TAP output, a free port, headless
// Chromium with fake camera and microphone, the call page opened and joined
// in a browser context of its own (one cookie jar per user), and the waits
// that say a call is up (chat channel open, remote video playing, frames
// decoded). calls.mjs (tests/50-browser.t) and cluster.mjs
// (tests/96-cluster-browser.t) use it.
import { chromium } from 'playwright-core';
import net from 'node:net';

// ---- TAP ----
// tapFrom(k): the next check is number k (a script whose checks follow a
// shell test's own, as in 96-cluster-browser.t).
let n = 0;
let failed = 0;
export function tapFrom(k) { n = k - 1; }
export function ok(cond, name, diag) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
  if (!cond && diag) console.log(`# ${String(diag).split('\n').join('\n# ')}`);
}
export const checks = () => n;
export const failures = () => failed;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// ---- the browser ----
// Debian's chromium (tests/browser/setup.sh), fake devices, host candidates
// as addresses (not mDNS names: the calls stay on loopback).
export function launchBrowser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
}

// pageKit(browser): openPage(base, name, room, options) opens the call page
// at base (http://HOST:PORT[/prefix]) in a new context (or options.ctx),
// fills the form and joins; closeAll() closes every context it opened (and
// those pushed onto contexts); consoleLog collects the pages' warnings and
// errors.
export function pageKit(browser) {
  const contexts = [];
  const consoleLog = [];
  async function openPage(base, name, room, { transport = 'auto', media = false, width = 1100, noEventSource = false,
    noWebSocket = false, ctx = null, switchableWs = false, switchableEs = false, query = '' } = {}) {
    if (!ctx) {
      ctx = await browser.newContext({ viewport: { width, height: 800 } });
      contexts.push(ctx);
    }
    const page = await ctx.newPage();
    // Every event the page's SignalClient dispatches (after its dedupe by id).
    await page.addInitScript(() => {
      window.__events = [];
      window.__states = []; // for diagnostics
      const dispatch = EventTarget.prototype.dispatchEvent;
      EventTarget.prototype.dispatchEvent = function (ev) {
        if (this.constructor && this.constructor.name === 'SignalClient' && ev.type === 'state')
          window.__states.push(`${ev.detail.transport}/${ev.detail.state}/${ev.detail.reason}@${Math.round(performance.now())}`);
        if (this.constructor && this.constructor.name === 'SignalClient' && ev.detail && typeof ev.detail.id === 'number')
          window.__events.push(ev.detail);
        return dispatch.call(this, ev);
      };
    });
    if (noEventSource) await page.addInitScript(() => { delete window.EventSource; });
    // Proxies, played in the page: while window.__blockWs is true (from the
    // start with noWebSocket) the upgrade is refused (error, then close 1006);
    // while window.__blockEs is true event streams are buffered (the
    // EventSource never opens and delivers nothing).
    if (noWebSocket || switchableWs || switchableEs) {
      await page.addInitScript(({ ws, es }) => {
        const gate = (name, flag, blocked, fake) => {
          const Real = window[name];
          window[flag] = blocked;
          window[name] = function (...args) { return window[flag] ? fake() : new Real(...args); };
        };
        const refusedSocket = () => {
          const f = new EventTarget();
          f.readyState = 0;
          f.send = () => { throw new Error('not open'); };
          f.close = () => {};
          setTimeout(() => {
            f.readyState = 3;
            if (f.onerror) f.onerror(new Event('error'));
            if (f.onclose) f.onclose({ code: 1006, reason: '' });
          }, 50);
          return f;
        };
        const bufferedStream = () => Object.assign(new EventTarget(), { readyState: 0, close() { this.readyState = 2; } });
        if (ws !== null) gate('WebSocket', '__blockWs', ws, refusedSocket);
        if (es !== null) gate('EventSource', '__blockEs', es, bufferedStream);
      }, { ws: noWebSocket || switchableWs ? noWebSocket : null, es: switchableEs ? false : null });
    }
    page.on('pageerror', (e) => console.log(`# page error (${name}): ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') consoleLog.push(`${name}: ${m.text()}`); });
    await page.goto(base + '/' + query);
    await page.fill('#name', name);
    await page.fill('#room', room);
    await page.selectOption('#transport', transport);
    await page.setChecked('#media', media); // the page ticks it by default
    await page.click('#joinBtn');
    return page;
  }
  async function closeAll() {
    while (contexts.length) await contexts.pop().close();
  }
  // A scenario gets one more try on fresh pages if the first fails (WebRTC
  // set-up on a loaded 2-core machine has its own timing); the first failure
  // is printed, so a flaky scenario is visible, and a real bug fails twice.
  // ONLY=REGEX runs just the scenarios whose name matches (while working on one).
  async function attempt(name, fn) {
    if (process.env.ONLY && !new RegExp(process.env.ONLY).test(name)) return true;
    for (let t = 1; t <= 2; t++) {
      try {
        await fn(t);
        return true;
      } catch (e) {
        await closeAll();
        if (t === 2) {
          ok(false, name, e.stack || e);
          return false;
        }
        console.log(`# ${name}: first try failed (${String(e.message || e).split('\n')[0]}); trying again`);
      }
    }
    return false;
  }
  return { openPage, closeAll, attempt, contexts, consoleLog };
}

// ---- waits and looks at a page ----
// Wait until page shows an open chat channel with every one of peers.
export async function channelsOpen(page, peers, timeout = 30000) {
  const sel = peers.map((p) => `#peers li[data-peer="${p}"][data-channel="open"]`).join(', ');
  await page.waitForFunction((s) => document.querySelectorAll(s.sel).length === s.count,
    { sel, count: peers.length }, { timeout });
}
// "transport/state/reason" as the page shows it.
export const shownState = (page) => page.evaluate(() => { const d = document.querySelector('#transportState').dataset;
  return `${d.transport}/${d.state}/${d.reason}`; });
export const onTransport = (page, t, timeout) => page.waitForFunction((want) => {
  const d = document.querySelector('#transportState').dataset;
  return d.transport === want && d.state === 'open'; }, t, { timeout });
// from sends {seq: first..last} to `to`, one every 100 ms, in the background.
export const sendSeq = (from, to, first, last) => from.evaluate(({ to, first, last }) => {
  window.__sending = (async () => {
    for (let i = first; i <= last; i++) {
      await window.signalApp.client.signal(to, { seq: i });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
}, { to, first, last });
export const seqsOf = (page) => page.evaluate(() => window.__events.filter((e) => e.seq).map((e) => e.seq));
export const upTo = (k) => Array.from({ length: k }, (_, i) => i + 1);
export const gotSeqs = (page, k, timeout = 20000) => page.waitForFunction((c) => window.__events.filter((e) => e.seq).length >= c,
  k, { timeout });

export async function chat(from, to, text) {
  await from.fill('#chatInput', text);
  await from.press('#chatInput', 'Enter');
  await to.waitForFunction((t) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(t)),
    text, { timeout: 10000 });
}

// Wait until page plays a remote video (peer's, or the first): its time
// advancing by 0.2 s and its frames sized.
export const videoPlaying = (page, peer = null, timeout = 20000) => page.waitForFunction((id) => {
  const v = document.querySelector(id ? `video.remote[data-peer="${id}"]` : 'video.remote');
  if (!v || v.readyState < 2) return false;
  if (v.__t0 === undefined) { v.__t0 = v.currentTime; return false; }
  return v.currentTime > v.__t0 + 0.2 && v.videoWidth > 0;
}, peer, { timeout, polling: 200 });

// The media of page's connection to peer, from its statistics:
// { state: connectionState, video: frames decoded, audio: packets received }.
export const mediaStats = (page, peer) => page.evaluate(async (id) => {
  const p = window.signalApp.peers.get(id);
  if (!p) return { state: 'none', video: 0, audio: 0 };
  let video = 0;
  let audio = 0;
  (await p.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') video += s.framesDecoded || 0;
    if (s.kind === 'audio') audio += s.packetsReceived || 0;
  });
  return { state: p.pc.connectionState, video, audio };
}, peer);
