import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { ReadBuffer } from '../../src/upstream/read-buffer.js'

/** Drives a ReadBuffer as net.Socket's onread does: a buffer, a read of `n` bytes into it, the next buffer. */
function reader (): { reads: ReadBuffer, chunks: Buffer[], read: (bytes: string) => Buffer } {
  const reads = new ReadBuffer()
  const chunks: Buffer[] = []
  let buffer = reads.onread.buffer()
  return {
    reads,
    chunks,
    read: (bytes) => {
      const used = buffer
      buffer.write(bytes, 0, 'latin1')
      reads.onread.callback(bytes.length)
      buffer = reads.onread.buffer()
      return used
    }
  }
}

t.test('chunks read before anyone takes them are copied and handed over first', async (t) => {
  const { reads, read } = reader()
  read('ab')
  read('cd')
  const seen: string[] = []
  reads.take((chunk) => { seen.push(chunk.toString()) })
  read('ef')
  t.same(seen, ['ab', 'cd', 'ef'])
})

t.test('the buffer is read into again unless the chunk was kept', async (t) => {
  const { reads, read } = reader()
  let keep = false
  let last: Buffer | undefined
  // As Sides does: keep() from inside the handler, before the next buffer is chosen.
  reads.take((chunk) => { last = chunk; if (keep) reads.keep() })
  const first = read('one')
  const second = read('two')
  t.equal(second, first, 'reused')
  keep = true
  read('six')
  const kept = last as Buffer
  keep = false
  const fourth = read('ten')
  t.not(fourth, second, 'a kept chunk is not read into again')
  t.equal(kept.toString(), 'six', 'what was kept stays as it was')
  t.equal(read('abc'), fourth, 'the new buffer is reused in turn')
})

t.test('the buffer grows when a read fills it and shrinks after many small reads', async (t) => {
  const { reads, read } = reader()
  reads.take(() => {})
  t.equal(read('x').length, 128, 'starts at 128 bytes')
  read('y'.repeat(128))
  t.equal(read('w'.repeat(256)).length, 256, 'doubled after a full read')
  const sizes = new Set<number>()
  for (let i = 0; i < 64; i++) sizes.add(read('s').length)
  t.same([...sizes], [512], 'doubled again; kept for 64 small reads')
  t.equal(read('s').length, 256, 'halved after them')
})

t.test('with a real socket: data arrives through take(), end and close as usual', async (t) => {
  const server = net.createServer((s) => { s.end('hello') })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  const reads = new ReadBuffer()
  const socket = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', onread: reads.onread })
  const got: string[] = []
  reads.take((chunk) => { got.push(chunk.toString()) })
  await once(socket, 'end')
  t.same(got.join(''), 'hello')
  socket.destroy()
})
