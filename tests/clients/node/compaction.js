#!/usr/bin/env node
// kafkajs driver for the compacted-topic test (tests/tests/kafka_compaction.rs): an unmodified
// kafkajs 2.2.4 creates a compacted topic with its admin `configEntries`, produces keyed values
// and tombstones, and reads the topic from the start in a new group. One JSON object per line
// on stdout; kafkajs's own log goes to stderr.
//
//   compaction.js create  --bootstrap H:P --topic T --configs '{"cleanup.policy":"compact",..}'
//   compaction.js produce --bootstrap H:P --topic T --messages '[{"key":"k","value":"v"|null},..]'
//                         [--per-send N]
//   compaction.js consume --bootstrap H:P --topic T --group G --end HW [--timeout-ms MS]
//
// produce prints {"event":"produced","key","value","offset"} per message (one partition).
// consume prints {"event":"consumed","offset","key","value"} per message, then "reached_end"
// once it has seen offset HW-1, then waits until the group's committed offset (kafkajs commits
// what it resolved after each batch) is HW and prints {"event":"committed","offset"}: a
// consumer stuck on a batch that holds no record never gets there. Every wait is bounded by
// --timeout-ms (default 120000); the script then fails, printing what it had seen.
'use strict'

const { Kafka, Partitioners, logLevel } = require('kafkajs')
const { parseArgs, required, emit, stderrLogCreator } = require('./common')

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function waitFor(what, deadline, condition) {
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

function client(options) {
  return new Kafka({
    clientId: 'tidelog-e2e-kafkajs-compaction',
    brokers: [required(options, 'bootstrap')],
    logLevel: logLevel.WARN,
    logCreator: stderrLogCreator,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
  })
}

async function create(kafka, options) {
  const topic = required(options, 'topic')
  const configs = JSON.parse(required(options, 'configs'))
  const configEntries = Object.entries(configs).map(([name, value]) => ({ name, value: String(value) }))
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions: 1, configEntries }],
      waitForLeaders: true,
    })
    emit('created', { topic, created })
  } finally {
    await admin.disconnect()
  }
}

async function produce(kafka, options) {
  const topic = required(options, 'topic')
  const messages = JSON.parse(required(options, 'messages'))
  const perSend = Number(options['per-send'] || 5)
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  })
  await producer.connect()
  try {
    for (let start = 0; start < messages.length; start += perSend) {
      const batch = messages.slice(start, start + perSend)
      const replies = await producer.send({ topic, messages: batch, acks: -1 })
      if (replies.length !== 1 || replies[0].errorCode !== 0) {
        throw new Error(`unexpected produce reply ${JSON.stringify(replies)}`)
      }
      let offset = Number(replies[0].baseOffset)
      for (const message of batch) {
        emit('produced', { key: message.key, value: message.value, offset })
        offset += 1
      }
    }
  } finally {
    await producer.disconnect()
  }
}

async function consume(kafka, options) {
  const topic = required(options, 'topic')
  const groupId = required(options, 'group')
  const end = Number(required(options, 'end'))
  const deadline = Date.now() + Number(options['timeout-ms'] || 120000)
  let last = -1
  let failure = null
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 500 })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    failure = failure || new Error(`consumer crashed: ${payload.error && payload.error.stack}`)
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: true,
    eachMessage: async ({ message }) => {
      const offset = Number(message.offset)
      emit('consumed', {
        offset,
        key: message.key === null ? null : message.key.toString(),
        value: message.value === null ? null : message.value.toString(),
      })
      last = Math.max(last, offset)
    },
  })
  const admin = kafka.admin()
  await admin.connect()
  try {
    await waitFor('the consumer to reach --end', deadline, async () => {
      if (failure) throw failure
      return last >= end - 1
    })
    emit('reached_end', { offset: last })
    let committed = -1
    await waitFor('the committed offset to reach --end', deadline, async () => {
      if (failure) throw failure
      const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] })
      committed = Number(partitions[0].offset)
      return committed >= end
    })
    emit('committed', { offset: committed })
  } finally {
    await admin.disconnect()
    await consumer.disconnect()
  }
}

async function main() {
  const { command, options } = parseArgs(process.argv.slice(2))
  const kafka = client(options)
  switch (command) {
    case 'create':
      return create(kafka, options)
    case 'produce':
      return produce(kafka, options)
    case 'consume':
      return consume(kafka, options)
    default:
      throw new Error(`unknown command ${command}`)
  }
}

main().then(
  () => process.exit(0),
  error => {
    emit('error', { message: String(error && error.message), name: error && error.name, type: error && error.type })
    process.stderr.write(`${error && error.stack}\n`)
    process.exit(1)
  }
)
