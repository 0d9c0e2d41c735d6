// Drives a real SDK against Stickpoint: node drive.mjs <segment|rudderstack> <host> <writeKey> <prefix>
// Sends identify, group, track (twice: one with a past timestamp) and page,
// with messageIds "<prefix>-<n>", flushes, and prints {"errors": [...]}.
import { Analytics as Segment } from '@segment/analytics-node'
import Rudder from '@rudderstack/rudder-sdk-node'

const [sdk, host, writeKey, prefix] = process.argv.slice(2)
const errors = []
const hourAgo = new Date(Date.now() - 3600 * 1000)
const calls = [
  ['identify', { userId: 'u-1', messageId: `${prefix}-1`, traits: { email: 'ada@example.com', seats: 25 } }],
  ['group', { userId: 'u-1', groupId: 'acct-conf', messageId: `${prefix}-2`, traits: { plan: 'enterprise', name: 'Acme' } }],
  ['track', { userId: 'u-1', event: 'Report Built', messageId: `${prefix}-3`, properties: { rows: 42, big: 9007199254740991 } }],
  ['track', { anonymousId: 'anon-1', event: 'Signed Up', messageId: `${prefix}-4`, timestamp: hourAgo }],
  ['page', { userId: 'u-1', name: 'Pricing', messageId: `${prefix}-5`, properties: { path: '/pricing' } }],
]

if (sdk === 'segment') {
  const a = new Segment({ writeKey, host, flushAt: 20, flushInterval: 100, maxRetries: 2 })
  a.on('error', (e) => errors.push(String(e?.reason ?? e?.message ?? e)))
  for (const [method, params] of calls) a[method](params)
  await a.closeAndFlush({ timeout: 15000 })
} else if (sdk === 'rudderstack') {
  const a = new Rudder(writeKey, { dataPlaneUrl: host, flushAt: 20, flushInterval: 100, retryCount: 2, logLevel: 'error',
    errorHandler: (e) => errors.push(String(e?.message ?? e)) })
  for (const [method, params] of calls) a[method](params)
  await new Promise((resolve) => a.flush((err) => { if (err) errors.push(String(err?.message ?? err)); resolve() }))
} else {
  errors.push(`unknown sdk ${sdk}`)
}
console.log(JSON.stringify({ errors }))
