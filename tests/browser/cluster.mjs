// cluster.mjs - real WebRTC calls through a running `make cluster` (the
// nodes and the balancer tests/96-cluster-browser.t started) in headless
// Chromium with fake camera and microphone: the call page opened on two
// different node ports, twice through the balancer, and across nodes over
// SSE and long-poll. Each call must have its chat channel open both ways,
// its RTCPeerConnection connected on both sides, and media flowing: the
// remote video playing and video frames decoded on both sides.
// Prints TAP lines numbered from TAP_FROM (the shell test's own checks come
// first; it prints the plan), and exits 1 if a check failed.
//   node tests/browser/cluster.mjs OUTDIR BALANCER_URL NODE1_URL NODE2_URL NODE3_URL
import { writeFileSync } from 'node:fs';
import { ok, failures, tapFrom, sleep, launchBrowser, pageKit, channelsOpen, chat, videoPlaying, mediaStats }
  from './lib.mjs';

const [OUT, LB, ...NODE] = process.argv.slice(2);
tapFrom(Number(process.env.TAP_FROM || 1));

const browser = await launchBrowser();
const { openPage, closeAll, attempt, consoleLog } = pageKit(browser);

// The transport a page shows ("ws", "sse", "poll").
const transportOf = (page) => page.getAttribute('#transportState', 'data-transport');

// call(label, callee, caller): the callee joins first and waits; the caller
// joins second and offers (the page's newcomer calls). Each side is
// { name, base, where, transport }.
async function call(label, callee, caller) {
  await attempt(label, async (t) => { // a second try: new names, a new room
    const room = `room-${callee.name}-${t}`;
    const started = Date.now();
    const b = await openPage(callee.base, `${callee.name}${t}`, room, { transport: callee.transport, media: true });
    await b.waitForSelector('#call:not([hidden])');
    const a = await openPage(caller.base, `${caller.name}${t}`, room, { transport: caller.transport, media: true });
    const [na, nb] = [`${caller.name}${t}`, `${callee.name}${t}`];
    await channelsOpen(a, [nb], 40000);
    await channelsOpen(b, [na], 40000);
    await chat(a, b, `${label}: hello from ${na}`);
    await chat(b, a, `${label}: hi ${na}`);
    const ta = await transportOf(a);
    const tb = await transportOf(b);
    const want = (side, got) => side.transport === 'auto' || side.transport === got;
    // Media: the remote video plays on both sides, then the decoder's count.
    await videoPlaying(a, nb, 30000);
    await videoPlaying(b, na, 30000);
    let sa = null;
    let sb = null;
    for (let i = 0; i < 50; i++) { // a second or two after playing, normally at once
      [sa, sb] = [await mediaStats(a, nb), await mediaStats(b, na)];
      if (sa.video > 0 && sb.video > 0 && sa.state === 'connected' && sb.state === 'connected') break;
      await sleep(200);
    }
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    ok(want(caller, ta) && want(callee, tb),
      `${label}: the caller (${caller.where}, ${ta}) and the callee (${callee.where}, ${tb}) open a chat channel ` +
      `and messages cross both ways`, `transports ${ta}/${tb}, wanted ${caller.transport}/${callee.transport}`);
    ok(sa.state === 'connected' && sb.state === 'connected',
      `${label}: the RTCPeerConnection is connected on both sides (${secs} s from the first page)`,
      JSON.stringify([sa, sb]));
    ok(sa.video > 0 && sb.video > 0 && sa.audio > 0 && sb.audio > 0,
      `${label}: media flows both ways: remote video playing, ${sa.video} and ${sb.video} video frames decoded, ` +
      `${sa.audio} and ${sb.audio} audio packets received`, JSON.stringify([sa, sb]));
    await a.screenshot({ path: `${OUT}/${callee.name}.png` }).catch(() => {});
  });
  await closeAll();
}

try {
  await call('node 1 calls node 2',
    { name: 'n2callee', base: NODE[1], where: 'node 2', transport: 'auto' },
    { name: 'n1caller', base: NODE[0], where: 'node 1', transport: 'auto' });
  await call('both through the balancer',
    { name: 'lbcallee', base: LB, where: 'balancer', transport: 'auto' },
    { name: 'lbcaller', base: LB, where: 'balancer', transport: 'auto' });
  await call('SSE meets long-poll across nodes',
    { name: 'ssecallee', base: NODE[2], where: 'node 3', transport: 'sse' },
    { name: 'pollcaller', base: NODE[0], where: 'node 1', transport: 'poll' });
} finally {
  await browser.close();
  writeFileSync(`${OUT}/console.log`, consoleLog.join('\n') + '\n');
}
process.exit(failures() ? 1 : 0);
