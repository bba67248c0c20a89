import t from 'tap'
import { Coalescer } from '../../src/proxy/coalescer.js'

function recorder (): { writes: string[], coalescer: Coalescer } {
  const writes: string[] = []
  return { writes, coalescer: new Coalescer((bytes) => { writes.push(bytes.toString()) }) }
}

t.test('back-to-back views of one chunk are written once, at finish', async (t) => {
  const { writes, coalescer } = recorder()
  const chunk = Buffer.from('aaabbbccc')
  coalescer.begin(chunk)
  coalescer.add(chunk.subarray(0, 3))
  coalescer.add(chunk.subarray(3, 6))
  coalescer.add(chunk.subarray(6, 9))
  t.same(writes, [], 'nothing written before the chunk is done')
  coalescer.finish()
  t.same(writes, ['aaabbbccc'])
})

t.test('a gap (a dropped packet) splits the range', async (t) => {
  const { writes, coalescer } = recorder()
  const chunk = Buffer.from('aaaXXXccc')
  coalescer.begin(chunk)
  coalescer.add(chunk.subarray(0, 3))
  coalescer.add(chunk.subarray(6, 9))
  coalescer.finish()
  t.same(writes, ['aaa', 'ccc'])
})

t.test('other bytes (an answer, a re-encoded packet) flush what is pending first', async (t) => {
  const { writes, coalescer } = recorder()
  const chunk = Buffer.from('aaabbb')
  coalescer.begin(chunk)
  coalescer.add(chunk.subarray(0, 3))
  coalescer.add(Buffer.from('NEW'))
  coalescer.add(chunk.subarray(3, 6))
  coalescer.finish()
  t.same(writes, ['aaa', 'NEW', 'bbb'])
})

t.test('outside a chunk, and for views of another buffer, bytes are written at once', async (t) => {
  const { writes, coalescer } = recorder()
  const old = Buffer.from('old')
  coalescer.add(old)
  const chunk = Buffer.from('new')
  coalescer.begin(chunk)
  coalescer.add(old.subarray(0, 1))
  t.same(writes, ['old', 'o'])
  coalescer.finish()
  coalescer.add(chunk.subarray(0, 3))
  t.same(writes, ['old', 'o', 'new'], 'after finish a view of the chunk is not held back')
})

t.test('a view into the same pool but outside the chunk is not mistaken for one', async (t) => {
  const { writes, coalescer } = recorder()
  const pool = Buffer.from('0123456789')
  const chunk = pool.subarray(2, 5)
  coalescer.begin(chunk)
  coalescer.add(pool.subarray(5, 8))
  t.same(writes, ['567'])
  coalescer.finish()
})

t.test('spans (the plain path: no view made) extend the range like views do', async (t) => {
  const { writes, coalescer } = recorder()
  const chunk = Buffer.from('aaabbbXXXccc')
  coalescer.begin(chunk)
  coalescer.addSpan(chunk, 0, 3)
  coalescer.add(chunk.subarray(3, 6))
  coalescer.addSpan(chunk, 9, 12)
  coalescer.finish()
  t.same(writes, ['aaabbb', 'ccc'], 'a gap splits the range; views and spans mix')
})

t.test('a span of another buffer (a packet joined across reads) is written at once, in order', async (t) => {
  const { writes, coalescer } = recorder()
  const chunk = Buffer.from('aaabbb')
  const joined = Buffer.from('JJJ')
  coalescer.begin(chunk)
  coalescer.addSpan(chunk, 0, 3)
  coalescer.addSpan(joined, 0, 3)
  coalescer.addSpan(chunk, 3, 6)
  coalescer.finish()
  t.same(writes, ['aaa', 'JJJ', 'bbb'])
})

t.test('a range covering the whole chunk writes the chunk itself', async (t) => {
  const written: Buffer[] = []
  const coalescer = new Coalescer((bytes) => { written.push(bytes) })
  const chunk = Buffer.from('aaabbb')
  coalescer.begin(chunk)
  coalescer.addSpan(chunk, 0, 3)
  coalescer.addSpan(chunk, 3, 6)
  coalescer.finish()
  t.equal(written[0], chunk)
})
