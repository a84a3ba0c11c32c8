// Does DNS already answer a record right, TTL included? One query over UDP (the answer's AA flag and TTLs, which getaddrinfo hides).
import { getServers } from 'node:dns';
import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import type { RecordChange } from './route53.ts';

export interface DnsCheckOptions {
  /** "ip", "ip:port" or "[v6]:port"; default the system's resolvers (/etc/resolv.conf). */
  servers?: readonly string[];
  timeoutMs?: number;
}

export type DnsType = 'A' | 'AAAA' | 'CNAME';
const TYPE_CODES: Record<DnsType, number> = { A: 1, AAAA: 28, CNAME: 5 };
const TYPE_NAMES = new Map<number, string>(Object.entries(TYPE_CODES).map(([name, code]) => [code, name]));

export interface DnsRecordAnswer {
  /** Lower case, with a trailing dot. */
  name: string;
  type: string;
  ttl: number;
  /** An address, or a name (lower case, trailing dot) for a CNAME. */
  data: string;
}

export interface DnsAnswer {
  /** The server that answered ("ip:port"). */
  server: string;
  /** The AA flag: the server holds the zone (its TTLs are the records' own, not a cache's countdown). */
  authoritative: boolean;
  /** 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED ... */
  rcode: number;
  answers: DnsRecordAnswer[];
}

export const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** One query (recursion desired) to the first server that answers; throws when none does. */
export async function queryDns(name: string, type: DnsType, options: DnsCheckOptions = {}): Promise<DnsAnswer> {
  const servers = options.servers && options.servers.length > 0 ? options.servers : getServers();
  if (servers.length === 0) throw new Error('no DNS server to ask (no nameserver in /etc/resolv.conf)');
  const errors: string[] = [];
  for (const server of servers) {
    try {
      return await queryServer(parseServer(server), name, type, options.timeoutMs ?? 2000);
    } catch (error) {
      errors.push(`${server}: ${(error as Error).message}`);
    }
  }
  throw new Error(`no DNS server answered ${name} ${type} (${errors.join('; ')})`);
}

/**
 * What DNS says of a declared record: right (values and TTL), differs (a value or the TTL is not as declared), or unsure.
 * `valuesRight`: the values (target, addresses) answered are the declared ones, whatever the TTL.
 */
export interface DnsVerdict {
  verdict: 'right' | 'differs' | 'unsure';
  detail: string;
  valuesRight: boolean;
}

/**
 * Asks DNS for a record as Route53 should hold it. Values (CNAME target, A/AAAA set, an alias's target addresses) must
 * match. The TTL is known only from an authoritative answer (AA): there it must equal the declared one; a cache counts
 * down from the record's TTL, so a cached TTL above the declared one proves a difference and anything else is unsure.
 * An alias takes its target's TTL, so only its addresses are compared; so is a record declared without a TTL. Any
 * failure is "unsure" (ask Route53).
 */
export async function checkRecordInDns(record: RecordChange, options: DnsCheckOptions = {}): Promise<DnsVerdict> {
  const name = normalizeName(record.name);
  const type = record.type as DnsType;
  if (!(type in TYPE_CODES)) return { verdict: 'unsure', detail: `type ${record.type} is not checked in DNS`, valuesRight: false };
  try {
    const got = await queryDns(name, type, options);
    const own = got.answers.filter((a) => a.name === name && a.type === type);
    if (got.rcode !== 0 || own.length === 0) {
      return { verdict: 'unsure', detail: `${got.server} answers ${RCODES[got.rcode] ?? `rcode ${got.rcode}`}, no ${type} record`, valuesRight: false };
    }
    const values = own.map((a) => a.data);
    if (record.alias) {
      const target = await queryDns(normalizeName(record.alias.dnsName), type, options);
      const addresses = target.answers.filter((a) => a.type === type).map((a) => a.data);
      return sameSet(values, addresses)
        ? { verdict: 'right', detail: `answers ${values.join(', ')} as its alias target does`, valuesRight: true }
        : { verdict: 'differs', detail: `answers ${values.join(', ')}, its alias target ${addresses.join(', ') || 'nothing'}`, valuesRight: false };
    }
    const want = (record.values ?? []).map((v) => normalizeValue(type, v));
    if (!sameSet(values, want)) return { verdict: 'differs', detail: `answers ${values.join(', ')}, not ${want.join(', ')}`, valuesRight: false };
    const ttl = Math.max(...own.map((a) => a.ttl));
    const declared = record.ttl;
    if (declared === undefined) return { verdict: 'right', detail: `answers ${values.join(', ')} ttl ${ttl}`, valuesRight: true };
    if (got.authoritative) {
      return ttl === declared
        ? { verdict: 'right', detail: `answers ${values.join(', ')} ttl ${ttl} (authoritative)`, valuesRight: true }
        : { verdict: 'differs', detail: `answers ${values.join(', ')} ttl ${ttl}, not ttl ${declared} (authoritative)`, valuesRight: true };
    }
    if (ttl > declared)
      return { verdict: 'differs', detail: `answers ${values.join(', ')} ttl ${ttl} from a cache, more than the ttl ${declared} declared`, valuesRight: true };
    return { verdict: 'unsure', detail: `answers ${values.join(', ')} from a cache (ttl ${ttl}), so the record's own TTL is not known`, valuesRight: true };
  } catch (error) {
    return { verdict: 'unsure', detail: (error as Error).message, valuesRight: false };
  }
}

/** Lower case with a trailing dot; "\052" (as Route53 lists a wildcard) back to "*". */
export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\\052/g, '*');
  return n.endsWith('.') ? n : `${n}.`;
}

/** A value as the answer parser renders it: names normalised, IPv6 in RFC 5952 form. */
export function normalizeValue(type: string, value: string): string {
  if (type === 'CNAME') return normalizeName(value);
  if (type === 'AAAA' && isIP(value) === 6) return formatIPv6(parseIPv6(value));
  return value.toLowerCase();
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a);
  const y = new Set(b);
  return x.size > 0 && x.size === y.size && [...x].every((v) => y.has(v));
}

// --- the wire format (RFC 1035 4.1) ---

function parseServer(server: string): { host: string; port: number; label: string } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(server) ?? /^([^:]+)(?::(\d+))?$/.exec(server);
  const host = m?.[1] ?? server;
  const port = m?.[2] ? Number(m[2]) : 53;
  if (isIP(host) === 0 || port < 1 || port > 65535) throw new Error(`"${server}" is not a DNS server address (ip, ip:port or [ipv6]:port)`);
  return { host, port, label: isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}` };
}

/** The query message: recursion desired, one question. */
export function encodeQuery(id: number, name: string, type: DnsType): Buffer {
  const labels = normalizeName(name).slice(0, -1).split('.');
  const parts: Buffer[] = [Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])];
  for (const label of labels) {
    const bytes = Buffer.from(label, 'ascii');
    if (bytes.length === 0 || bytes.length > 63) throw new Error(`"${name}" has an empty or too long label`);
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0, TYPE_CODES[type] >> 8, TYPE_CODES[type] & 0xff, 0, 1]));
  return Buffer.concat(parts);
}

/** The header flags and answer records of a response (names decompressed). */
export function decodeResponse(message: Buffer): { id: number; authoritative: boolean; truncated: boolean; rcode: number; answers: DnsRecordAnswer[] } {
  if (message.length < 12) throw new Error('a DNS response shorter than its header');
  const flags = message.readUInt16BE(2);
  const questions = message.readUInt16BE(4);
  const count = message.readUInt16BE(6);
  let offset = 12;
  for (let i = 0; i < questions; i++) offset = readName(message, offset).next + 4;
  const answers: DnsRecordAnswer[] = [];
  for (let i = 0; i < count; i++) {
    const owner = readName(message, offset);
    offset = owner.next;
    if (offset + 10 > message.length) throw new Error('a DNS answer cut short');
    const code = message.readUInt16BE(offset);
    const ttl = message.readUInt32BE(offset + 4);
    const length = message.readUInt16BE(offset + 8);
    const start = offset + 10;
    offset = start + length;
    if (offset > message.length) throw new Error('a DNS answer cut short');
    const type = TYPE_NAMES.get(code) ?? `TYPE${code}`;
    let data: string;
    if (code === 1 && length === 4) data = [...message.subarray(start, start + 4)].join('.');
    else if (code === 28 && length === 16) data = formatIPv6(message.subarray(start, start + 16));
    else if (code === 5) data = readName(message, start).name;
    else data = message.subarray(start, offset).toString('hex');
    answers.push({ name: owner.name, type, ttl, data });
  }
  return { id: message.readUInt16BE(0), authoritative: (flags & 0x0400) !== 0, truncated: (flags & 0x0200) !== 0, rcode: flags & 0x0f, answers };
}

function readName(message: Buffer, start: number): { name: string; next: number } {
  const labels: string[] = [];
  let offset = start;
  let next: number | undefined;
  for (let jumps = 0; ; ) {
    const length = message[offset];
    if (length === undefined) throw new Error('a DNS name runs past the message');
    if ((length & 0xc0) === 0xc0) {
      if (++jumps > 32) throw new Error('a DNS name with a compression loop');
      next ??= offset + 2;
      offset = ((length & 0x3f) << 8) | (message[offset + 1] ?? 0);
      continue;
    }
    if (length === 0) {
      next ??= offset + 1;
      break;
    }
    labels.push(message.subarray(offset + 1, offset + 1 + length).toString('latin1'));
    offset += 1 + length;
  }
  return { name: `${labels.join('.').toLowerCase()}.`, next };
}

function parseIPv6(text: string): Buffer {
  const [head = '', tail] = text.split('::');
  const groups = (part: string) => (part ? part.split(':') : []);
  let left = groups(head);
  let right = tail === undefined ? [] : groups(tail);
  const last = (right.length ? right : left).at(-1) ?? '';
  if (last.includes('.')) {
    const v4 = last.split('.').map(Number);
    const pair = [((v4[0]! << 8) | v4[1]!).toString(16), ((v4[2]! << 8) | v4[3]!).toString(16)];
    if (right.length) right = [...right.slice(0, -1), ...pair];
    else left = [...left.slice(0, -1), ...pair];
  }
  const zeros = Array<string>(8 - left.length - right.length).fill('0');
  const all = tail === undefined ? left : [...left, ...zeros, ...right];
  const out = Buffer.alloc(16);
  for (const [i, g] of all.entries()) out.writeUInt16BE(parseInt(g, 16), i * 2);
  return out;
}

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as "::". */
function formatIPv6(bytes: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  let best = { start: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.length && j - i >= 2) best = { start: i, length: j - i };
    i = j;
  }
  if (best.start < 0) return groups.join(':');
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.length).join(':')}`;
}

function queryServer(server: { host: string; port: number; label: string }, name: string, type: DnsType, timeoutMs: number): Promise<DnsAnswer> {
  return new Promise((resolve, reject) => {
    const id = randomInt(0, 0x10000);
    const socket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const done = (error: Error | undefined, answer?: DnsAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (error: NodeJS.ErrnoException) => done(new Error(error.code ?? error.message)));
    socket.on('message', (message) => {
      try {
        const got = decodeResponse(message);
        if (got.id !== id) return; // not ours: keep waiting
        if (got.truncated) return done(new Error('the answer was truncated (TC)'));
        done(undefined, { server: server.label, authoritative: got.authoritative, rcode: got.rcode, answers: got.answers });
      } catch (error) {
        done(error as Error);
      }
    });
    // connected, so an ICMP port unreachable surfaces as ECONNREFUSED at once instead of a timeout
    socket.connect(server.port, server.host, () => socket.send(encodeQuery(id, name, type)));
  });
}
