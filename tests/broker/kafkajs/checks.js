// KafkaJS against one Kafka: every check in one process, one JSON object on stdout.
// Run by tests/broker/test_clients_kafkajs.py: node checks.js BOOTSTRAP PREFIX
'use strict'
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, prefix] = process.argv.slice(2)
const kafka = new Kafka({ clientId: 'kafkajs-checks', brokers: [bootstrap], logLevel: logLevel.NOTHING })
const admin = kafka.admin()

function failure (error) {
  const detail = (error.partitions || []).map((p) => p.error && p.error.message)
  return { error: error.name, type: error.type || null, message: error.message, detail }
}

async function eventually (probe, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const found = await probe()
    if (found) return found
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function createTopic (topic, configEntries = []) {
  await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries }], waitForLeaders: true })
  // Apache Kafka's metadata shows a new topic's leader a moment after CreateTopics answers.
  await eventually(async () => {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
      return topics[0].partitions.every((partition) => partition.leader >= 0)
    } catch (error) {
      return false
    }
  }, `topic ${topic} to have a leader`)
}

async function consume (topic, count) {
  const consumer = kafka.consumer({ groupId: `${topic}-reader` })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const got = []
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message) } })
  try {
    await eventually(() => got.length >= count, `${count} records on ${topic}`)
  } finally {
    await consumer.disconnect()
  }
  return got
}

const checks = {
  async idempotentProducer () {
    const topic = `${prefix}-idempotent`
    await createTopic(topic)
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    for (let batch = 0; batch < 10; batch++) {
      const messages = Array.from({ length: 10 }, (_, i) => ({ value: String(batch * 10 + i) }))
      await producer.send({ topic, acks: -1, messages })
    }
    await producer.disconnect()
    return { values: (await consume(topic, 100)).map((m) => m.value.toString()) }
  },

  async logAppendTime () {
    const topic = `${prefix}-append-time`
    await createTopic(topic, [{ name: 'message.timestamp.type', value: 'LogAppendTime' }])
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({ topic, messages: [{ value: 'stamp me', timestamp: '42' }] })
    await producer.disconnect()
    const [message] = await consume(topic, 1)
    return { timestamp: Number(message.timestamp) }
  },

  async deleteRecords () {
    const topic = `${prefix}-delete-records`
    await createTopic(topic)
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ value: String(i) })) })
    await producer.disconnect()
    await admin.fetchTopicMetadata({ topics: [topic] }) // the admin learns the new leader
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '7' }] })
    const [offsets] = await admin.fetchTopicOffsets(topic)
    return { low: Number(offsets.low), high: Number(offsets.high) }
  },

  async groups () {
    const topic = `${prefix}-groups`
    await createTopic(topic)
    const groupId = `${prefix}-group`
    const consumer = kafka.consumer({ groupId })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic] })
    await consumer.run({ eachMessage: async () => {} })
    try {
      const described = await eventually(async () => {
        const { groups } = await admin.describeGroups([groupId])
        return groups[0].state === 'Stable' && groups[0]
      }, 'a Stable group')
      const { groups } = await admin.listGroups()
      return {
        listed: groups.some((group) => group.groupId === groupId),
        state: described.state,
        members: described.members.length
      }
    } finally {
      await consumer.disconnect()
    }
  },

  async transactions () {
    const producer = kafka.producer({ transactionalId: `${prefix}-tx`, maxInFlightRequests: 1, idempotent: true })
    await producer.connect()
    try {
      const transaction = await producer.transaction()
      await transaction.abort()
      return { ok: true }
    } catch (error) {
      return failure(error)
    } finally {
      await producer.disconnect()
    }
  },

  async sasl () {
    const client = new Kafka({
      brokers: [bootstrap],
      logLevel: logLevel.NOTHING,
      retry: { retries: 0 },
      sasl: { mechanism: 'plain', username: 'rep', password: 'secret' }
    })
    const saslAdmin = client.admin()
    try {
      await saslAdmin.connect()
      return { ok: true }
    } catch (error) {
      return failure(error)
    } finally {
      await saslAdmin.disconnect()
    }
  }
}

async function main () {
  await admin.connect()
  const results = {}
  for (const [name, check] of Object.entries(checks)) {
    try {
      results[name] = await check()
    } catch (error) {
      results[name] = { unexpected: failure(error) }
    }
  }
  await admin.disconnect()
  process.stdout.write(JSON.stringify(results) + '\n')
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`)
  process.exit(1)
})
