#!/usr/bin/env node
// kafkajs driver for Tidelog's end-to-end tests (tests/tests/kafka_kafkajs.rs and
// kafka_cross_protocol.rs). One subcommand per run; every result is one JSON object per line
// on stdout, which the Rust test checks (records, offsets, keys, order). kafkajs's own log
// goes to stderr (KAFKAJS_LOG_LEVEL=DEBUG for the protocol detail).
//
//   kafka.js metadata      --bootstrap H:P
//   kafka.js create-topic  --bootstrap H:P --topic T --partitions N
//   kafka.js produce       --bootstrap H:P --topic T --records N --keys K --tag TAG
//                          [--acks 1|-1|0] [--idempotent] [--compression none|gzip|snappy]
//                          [--per-send N]
//   kafka.js offsets       --bootstrap H:P --topic T
//   kafka.js group         --bootstrap H:P --topic T --group G --end P:O,.. --commit P:O,..
//                          [--members 2]
//   kafka.js consume       --bootstrap H:P --topic T --group G --end P:O,..
//   kafka.js committed     --bootstrap H:P --topic T --group G
//   kafka.js delete-topic  --bootstrap H:P --topic T
//
// Values are `TAG-KEY-SEQ` (SEQ counts per key from 0), so a consumer can check per-key order.
// Every wait is bounded by --timeout-ms (default 60000): the script then fails, printing
// what it had seen.
'use strict'

const { Kafka, Partitioners, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const { parseArgs, required, emit, stderrLogCreator } = require('./common')
const SnappyCodec = require('kafkajs-snappy')

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec

// `0:5,1:7` -> Map{0 => 5, 1 => 7}
function partitionMap(text) {
  const map = new Map()
  if (!text || text === true) return map
  for (const item of text.split(',')) {
    const [partition, offset] = item.split(':').map(Number)
    if (!Number.isInteger(partition) || !Number.isInteger(offset)) throw new Error(`bad partition:offset ${item}`)
    map.set(partition, offset)
  }
  return map
}

function client(options) {
  return new Kafka({
    clientId: options['client-id'] || 'tidelog-e2e-kafkajs',
    brokers: [required(options, 'bootstrap')],
    logLevel: logLevel.WARN,
    logCreator: stderrLogCreator,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
  })
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function waitFor(what, deadline, condition) {
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

function valueText(message) {
  return message.value === null ? null : message.value.toString()
}

function keyText(message) {
  return message.key === null ? null : message.key.toString()
}

function headersObject(headers) {
  const out = {}
  for (const [name, value] of Object.entries(headers || {})) {
    out[name] = Buffer.isBuffer(value) ? value.toString() : String(value)
  }
  return out
}

async function metadata(kafka) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const cluster = await admin.describeCluster()
    emit('cluster', cluster)
    emit('topics', { names: (await admin.listTopics()).sort() })
  } finally {
    await admin.disconnect()
  }
}

async function createTopic(kafka, options) {
  const topic = required(options, 'topic')
  const numPartitions = Number(required(options, 'partitions'))
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true })
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    emit('created', {
      topic,
      created,
      partitions: topics[0].partitions
        .map(p => ({ partition: p.partitionId, leader: p.leader, errorCode: p.partitionErrorCode }))
        .sort((a, b) => a.partition - b.partition),
    })
  } finally {
    await admin.disconnect()
  }
}

async function produce(kafka, options) {
  const topic = required(options, 'topic')
  const records = Number(required(options, 'records'))
  const keys = Number(options.keys || 3)
  const tag = required(options, 'tag')
  const acks = Number(options.acks === undefined ? -1 : options.acks)
  const idempotent = options.idempotent === true
  const perSend = Number(options['per-send'] || 5)
  const compression = {
    none: CompressionTypes.None,
    gzip: CompressionTypes.GZIP,
    snappy: CompressionTypes.Snappy,
  }[options.compression || 'none']
  if (compression === undefined) throw new Error(`kafkajs here has no codec ${options.compression}`)

  const partitioner = Partitioners.DefaultPartitioner
  const producer = kafka.producer({
    createPartitioner: partitioner,
    idempotent,
    maxInFlightRequests: idempotent ? 1 : undefined,
    allowAutoTopicCreation: false,
  })
  // The same partitioner the producer uses, to learn which partition each message went to
  // (kafkajs reports one base offset per partition of a send).
  const choose = partitioner()
  const admin = kafka.admin()
  await admin.connect()
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
  await admin.disconnect()
  const partitionMetadata = topics[0].partitions

  await producer.connect()
  try {
    const sequence = new Map()
    for (let start = 0; start < records; start += perSend) {
      const batch = []
      for (let i = start; i < Math.min(records, start + perSend); i++) {
        const key = `k${i % keys}`
        const seq = sequence.get(key) || 0
        sequence.set(key, seq + 1)
        batch.push({ key, value: `${tag}-${key}-${seq}`, headers: { tag, seq: String(seq) } })
      }
      const replies = await producer.send({ topic, messages: batch, acks, compression })
      const next = new Map()
      for (const reply of replies) {
        if (reply.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(reply)}`)
        next.set(reply.partition, Number(reply.baseOffset))
      }
      for (const message of batch) {
        const partition = choose({ topic, partitionMetadata, message })
        let offset = null
        // acks=0 gets no reply and so no offsets.
        if (next.has(partition)) {
          offset = next.get(partition)
          next.set(partition, offset + 1)
        }
        emit('produced', { key: message.key, value: message.value, partition, offset })
      }
    }
  } finally {
    await producer.disconnect()
  }
}

async function offsets(kafka, options) {
  const topic = required(options, 'topic')
  const admin = kafka.admin()
  await admin.connect()
  try {
    const result = await admin.fetchTopicOffsets(topic)
    for (const p of result.sort((a, b) => a.partition - b.partition)) {
      emit('offsets', { partition: p.partition, low: Number(p.low), high: Number(p.high) })
    }
  } finally {
    await admin.disconnect()
  }
}

async function committed(kafka, options) {
  const topic = required(options, 'topic')
  const groupId = required(options, 'group')
  const admin = kafka.admin()
  await admin.connect()
  try {
    const result = await admin.fetchOffsets({ groupId, topics: [topic] })
    for (const p of result[0].partitions.sort((a, b) => a.partition - b.partition)) {
      emit('committed', { partition: p.partition, offset: Number(p.offset) })
    }
  } finally {
    await admin.disconnect()
  }
}

// Members of one group consume `topic` until every offset below --end has been seen by one of
// them and the group has settled with every member owning partitions. With --commit, each
// member commits (synchronously, after printing it) every message below that partition's
// target, and nothing at or past it.
async function group(kafka, options, { members: memberCount, commitTargets }) {
  const topic = required(options, 'topic')
  const groupId = required(options, 'group')
  const end = partitionMap(required(options, 'end'))
  const deadline = Date.now() + Number(options['timeout-ms'] || 60000)
  const seen = new Map([...end.keys()].map(p => [p, new Set()]))
  const assignments = new Map()
  const committedUpTo = new Map()
  const consumers = []
  let failure = null

  for (let m = 0; m < memberCount; m++) {
    const member = `m${m}`
    const consumer = kafka.consumer({
      groupId,
      sessionTimeout: 10000,
      rebalanceTimeout: 20000,
      heartbeatInterval: 500,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: 500,
    })
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      const partitions = (payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b)
      assignments.set(member, partitions)
      emit('joined', { member, memberId: payload.memberId, isLeader: payload.isLeader, partitions })
    })
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      failure = failure || new Error(`${member} crashed: ${payload.error && payload.error.stack}`)
    })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const offset = Number(message.offset)
        emit('consumed', {
          member,
          partition,
          offset,
          key: keyText(message),
          value: valueText(message),
          headers: headersObject(message.headers),
        })
        if (seen.has(partition)) seen.get(partition).add(offset)
        const target = commitTargets.get(partition)
        if (target !== undefined && offset + 1 <= target) {
          await consumer.commitOffsets([{ topic, partition, offset: String(offset + 1) }])
          committedUpTo.set(partition, offset + 1)
          emit('commit', { member, partition, offset: offset + 1 })
        }
      },
    })
    consumers.push(consumer)
  }

  const settled = () => {
    if (failure) throw failure
    for (const [partition, high] of end) {
      const got = seen.get(partition)
      for (let offset = 0; offset < high; offset++) {
        if (!got.has(offset)) return false
      }
    }
    for (const [partition, target] of commitTargets) {
      if (target > 0 && committedUpTo.get(partition) !== target) return false
    }
    if (assignments.size !== memberCount) return false
    const owned = [...assignments.values()]
    if (owned.some(partitions => partitions.length === 0)) return false
    const all = owned.flat().sort((a, b) => a - b)
    return JSON.stringify(all) === JSON.stringify([...end.keys()].sort((a, b) => a - b))
  }
  try {
    await waitFor('the group to consume everything and settle', deadline, settled)
    emit('settled', { assignments: Object.fromEntries(assignments) })
  } finally {
    for (const consumer of consumers) await consumer.disconnect()
  }
}

// One member of GROUP consumes until it has seen the last offset below --end of every
// partition whose committed offset is below it.
async function consume(kafka, options) {
  const topic = required(options, 'topic')
  const groupId = required(options, 'group')
  const end = partitionMap(required(options, 'end'))
  const deadline = Date.now() + Number(options['timeout-ms'] || 60000)
  const admin = kafka.admin()
  await admin.connect()
  const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] })
  await admin.disconnect()
  const start = new Map(partitions.map(p => [p.partition, Math.max(0, Number(p.offset))]))
  for (const [partition, offset] of [...start].sort((a, b) => a[0] - b[0])) {
    emit('committed_before', { partition, offset })
  }
  const last = new Map()
  let failure = null
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 500 })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    failure = failure || new Error(`consumer crashed: ${payload.error && payload.error.stack}`)
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: options.commit === true,
    eachMessage: async ({ partition, message }) => {
      const offset = Number(message.offset)
      emit('consumed', {
        member: 'm0',
        partition,
        offset,
        key: keyText(message),
        value: valueText(message),
        headers: headersObject(message.headers),
      })
      last.set(partition, offset)
    },
  })
  try {
    await waitFor('the consumer to reach --end', deadline, () => {
      if (failure) throw failure
      for (const [partition, high] of end) {
        if ((start.get(partition) || 0) < high && last.get(partition) !== high - 1) return false
      }
      return true
    })
    emit('reached_end', {})
  } finally {
    await consumer.disconnect()
  }
}

async function deleteTopic(kafka, options) {
  const topic = required(options, 'topic')
  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.deleteTopics({ topics: [topic] })
    emit('deleted', { topic })
    emit('topics', { names: (await admin.listTopics()).sort() })
  } finally {
    await admin.disconnect()
  }
}

async function main() {
  const { command, options } = parseArgs(process.argv.slice(2))
  const kafka = client(options)
  switch (command) {
    case 'metadata':
      return metadata(kafka)
    case 'create-topic':
      return createTopic(kafka, options)
    case 'produce':
      return produce(kafka, options)
    case 'offsets':
      return offsets(kafka, options)
    case 'committed':
      return committed(kafka, options)
    case 'group':
      return group(kafka, options, {
        members: Number(options.members || 2),
        commitTargets: partitionMap(options.commit),
      })
    case 'consume':
      return consume(kafka, options)
    case 'delete-topic':
      return deleteTopic(kafka, options)
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
