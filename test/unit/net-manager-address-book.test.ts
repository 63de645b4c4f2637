import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AddressBook,
  ATTACHMENTS_FILE,
  type Attachment,
  instanceKey,
  SubnetFullError,
} from '../../net-manager/plumbing/address-book.js';

const SUBNET = '10.18.0.64/26';

/** A logger that keeps what it was told, to check that a bad file is reported rather than thrown. */
function recordingLogger(): { logger: pino.Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

function attachment(key: string, namespaceIp: string, containerId = 'a'.repeat(64)): Attachment {
  return { containerId, pid: 4242, key, namespaceIp, instanceIp: '10.30.0.7', veth: 've-aaaaaaaaaaaa' };
}

describe('net manager address book', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-address-book-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('hands out distinct addresses from .2 of the subnet, the same one again for the same key', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    const first = await book.allocate(instanceKey('job-a', 0));
    const second = await book.allocate(instanceKey('job-a', 1));
    const third = await book.allocate(instanceKey('job-b', 0));
    expect([first, second, third]).toEqual(['10.18.0.66', '10.18.0.67', '10.18.0.68']);
    expect(await book.allocate('job-a/0')).toBe(first);
    expect(book.addressOf('job-b/0')).toBe(third);
  });

  it('gives every key its own address until the subnet is full, never network, gateway or broadcast', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    const handed = await Promise.all(Array.from({ length: 61 }, (_, n) => book.allocate(`job/${n}`)));
    expect(new Set(handed).size).toBe(61);
    const lastOctets = handed.map((ip) => Number(ip.split('.')[3])).sort((a, b) => a - b);
    expect(lastOctets[0]).toBe(66);
    expect(lastOctets.at(-1)).toBe(126);
    expect(handed).not.toContain('10.18.0.64');
    expect(handed).not.toContain('10.18.0.65');
    expect(handed).not.toContain('10.18.0.127');

    await expect(book.allocate('job/61')).rejects.toThrow(SubnetFullError);
    await expect(book.allocate('job/61')).rejects.toThrow(
      /no free namespace IP in worker subnet 10\.18\.0\.64\/26/,
    );
    expect(await book.allocate('job/7')).toBe(handed[7]);
  });

  it('reuses a released address, lowest first', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    await book.allocate('a/0');
    const freed = await book.allocate('a/1');
    await book.allocate('a/2');
    await book.release('a/1');
    await book.release('never-allocated/0');
    expect(book.addressOf('a/1')).toBeUndefined();
    expect(await book.allocate('b/0')).toBe(freed);
    expect(await book.allocate('b/1')).toBe('10.18.0.69');
  });

  it('keeps addresses and attachments across a reload', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    const ip = await book.allocate('job/0');
    await book.allocate('job/1');
    await book.recordAttachment(attachment('job/0', ip));
    await book.release('job/1');

    const again = await AddressBook.load(dir, SUBNET);
    expect(again.addressOf('job/0')).toBe(ip);
    expect(again.addressOf('job/1')).toBeUndefined();
    expect(again.attachments()).toEqual([attachment('job/0', ip)]);
    expect(await again.allocate('job/2')).toBe('10.18.0.67');

    expect(await again.forgetAttachment('a'.repeat(64))).toEqual(attachment('job/0', ip));
    expect((await AddressBook.load(dir, SUBNET)).attachments()).toEqual([]);
    expect((await AddressBook.load(dir, SUBNET)).addressOf('job/0')).toBe(ip);
  });

  it('forgets every attachment and releases many keys, each with one write, kept across a reload', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    const first = await book.allocate('job/0');
    const second = await book.allocate('job/1');
    const third = await book.allocate('job/2');
    await book.recordAttachment(attachment('job/0', first));
    await book.recordAttachment(attachment('job/1', second, 'b'.repeat(64)));
    expect((await book.forgetAllAttachments()).map((each) => each.key).sort()).toEqual(['job/0', 'job/1']);
    expect(await book.forgetAllAttachments()).toEqual([]);
    await book.release('job/0', 'job/2', 'never-allocated/0');

    const again = await AddressBook.load(dir, SUBNET);
    expect(again.attachments()).toEqual([]);
    expect(again.addressOf('job/0')).toBeUndefined();
    expect(again.addressOf('job/1')).toBe(second);
    expect(again.addressOf('job/2')).toBeUndefined();
    expect(await again.allocate('x/0')).toBe(first);
    expect(await again.allocate('x/1')).toBe(third);
  });

  it('forgets the attachments of a released key, and refuses an attachment with an address not allocated', async () => {
    const book = await AddressBook.load(dir, SUBNET);
    const ip = await book.allocate('job/0');
    await book.recordAttachment(attachment('job/0', ip));
    await expect(book.recordAttachment(attachment('job/1', '10.18.0.99', 'b'.repeat(64)))).rejects.toThrow(
      /not the namespace IP of job\/1/,
    );
    await book.release('job/0');
    expect(book.attachments()).toEqual([]);
  });

  it('starts over when the worker got another subnet', async () => {
    const { logger, lines } = recordingLogger();
    const book = await AddressBook.load(dir, SUBNET);
    await book.recordAttachment(attachment('job/0', await book.allocate('job/0')));
    const moved = await AddressBook.load(dir, '10.18.1.0/26', logger);
    expect(moved.subnet).toBe('10.18.1.0/26');
    expect(moved.addressOf('job/0')).toBeUndefined();
    expect(moved.attachments()).toEqual([]);
    expect(await moved.allocate('job/0')).toBe('10.18.1.2');
    expect(lines.some((line) => /subnet changed/.test(line.msg))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, ATTACHMENTS_FILE), 'utf8')).subnet).toBe('10.18.1.0/26');
  });

  it('starts empty from a corrupt file, logs it and keeps a copy', async () => {
    const { logger, lines } = recordingLogger();
    const torn = '{"subnet": "10.18.0.64/26", "addresses": {"job/0": "10.18.0.6';
    writeFileSync(join(dir, ATTACHMENTS_FILE), torn);
    const book = await AddressBook.load(dir, SUBNET, logger);
    expect(book.attachments()).toEqual([]);
    expect(await book.allocate('job/0')).toBe('10.18.0.66');
    expect(lines.some((line) => line.level >= 50 && /corrupt/.test(line.msg))).toBe(true);
    const copies = readdirSync(dir).filter((name) => name.startsWith(`${ATTACHMENTS_FILE}.corrupt-`));
    expect(copies).toHaveLength(1);
    expect(readFileSync(join(dir, copies[0]!), 'utf8')).toBe(torn);
    expect((await AddressBook.load(dir, SUBNET)).addressOf('job/0')).toBe('10.18.0.66');
  });

  it('starts empty from a file that parses but cannot be right (duplicate or foreign addresses)', async () => {
    for (const addresses of [
      { 'a/0': '10.18.0.66', 'b/0': '10.18.0.66' },
      { 'a/0': '10.18.0.65' },
      { 'a/0': '10.18.1.10' },
    ]) {
      writeFileSync(
        join(dir, ATTACHMENTS_FILE),
        JSON.stringify({ subnet: SUBNET, addresses, attachments: {} }),
      );
      const { logger, lines } = recordingLogger();
      const book = await AddressBook.load(dir, SUBNET, logger);
      expect(book.addressOf('a/0')).toBeUndefined();
      expect(lines.some((line) => line.level >= 50)).toBe(true);
    }
  });

  it('starts empty from an unreadable file instead of crashing', async () => {
    // Root reads files whatever their mode; a directory in the file's place is unreadable for everyone.
    mkdirSync(join(dir, ATTACHMENTS_FILE));
    const { logger, lines } = recordingLogger();
    const book = await AddressBook.load(dir, SUBNET, logger);
    expect(book.attachments()).toEqual([]);
    expect(lines.some((line) => line.level >= 50 && /cannot read/.test(line.msg))).toBe(true);
  });

  it('refuses a subnet with no room for namespace IPs', async () => {
    await expect(AddressBook.load(dir, '10.18.0.64/31')).rejects.toThrow(/too small/);
    await expect(AddressBook.load(dir, 'not-a-subnet')).rejects.toThrow(/not a CIDR block/);
  });
});
