// mint-login.mjs - the same as mint-login.sh, for a Node.js backend:
//   import { mintLogin } from './mint-login.mjs';
//   const auth = mintLogin(secret, 'alice');   // "EXPIRY:HMAC", valid 5 minutes
// or from a shell: node tools/mint-login.mjs SECRET_FILE USER_ID [TTL_SECONDS]
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

export function mintLogin(secret, userId, ttlSeconds = 300) {
  const expiry = Math.floor(Date.now() / 1000) + ttlSeconds;
  const mac = createHmac('sha256', secret).update(`${userId}:${expiry}`).digest('hex');
  return `${expiry}:${mac}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, user, ttl] = process.argv.slice(2);
  const secret = readFileSync(file, 'utf8').replace(/[\r\n]+$/, '');
  console.log(mintLogin(secret, user, ttl ? Number(ttl) : 300));
}
