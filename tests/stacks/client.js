// A Node.js tls client for the stack tests: one case per input line, one result line per
// case, each through an HTTP CONNECT proxy (what https-proxy-agent does: CONNECT, then
// tls.connect({socket})).
//
// Input (tab separated): id proxy_port host port sni|- cafile max_version(1.2|1.3)
// Output: id <TAB> ok|error <TAB> message
'use strict';
const fs = require('fs');
const net = require('net');
const tls = require('tls');

function tunnel(proxy, host, port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(proxy), '127.0.0.1');
    sock.setTimeout(20000, () => sock.destroy(new Error('timeout')));
    sock.once('error', reject);
    sock.once('connect', () => sock.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`));
    let head = '';
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      sock.removeListener('data', onData);
      sock.removeListener('error', reject);
      if (/^HTTP\/1\.[01] 200/.test(head)) resolve(sock);
      else reject(new Error(`CONNECT answered ${head.split('\r\n')[0]}`));
    };
    sock.on('data', onData);
  });
}

async function run(proxy, host, port, sni, cafile, max) {
  const socket = await tunnel(proxy, host, port);
  return new Promise((resolve, reject) => {
    const t = tls.connect({
      socket,
      servername: sni === '-' ? '' : sni,  // '' sends no SNI
      ca: fs.readFileSync(cafile),
      maxVersion: max === '1.2' ? 'TLSv1.2' : 'TLSv1.3',
      checkServerIdentity: (_, cert) => tls.checkServerIdentity(host, cert),
    });
    t.once('error', (e) => { socket.destroy(); reject(e); });
    t.once('secureConnect', () => {
      t.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      let reply = '';
      t.on('data', (d) => { reply += d.toString('latin1'); });
      t.once('end', () => {
        socket.destroy();
        if (reply.startsWith('HTTP/1.1 200')) resolve(); else reject(new Error(`no HTTP answer: ${reply.slice(0, 40)}`));
      });
    });
  });
}

async function main() {
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.split('\t').length === 7);
  for (const line of lines) {
    const f = line.split('\t');
    try {
      await run(...f.slice(1));
      process.stdout.write(`${f[0]}\tok\t\n`);
    } catch (e) {
      process.stdout.write(`${f[0]}\terror\t${String(e.code || '')} ${String(e.message).replace(/\n/g, ' ')}\n`);
    }
  }
}

main();
