#!/usr/bin/env node
// kafkajs driver for conditional appends (tests/tests/kafka_conditional.rs): an unmodified
// kafkajs producer sets the `tidelog-expect` and `tidelog-event-id` headers, as an application
// would. One producer per run (so a run is "a new producer"); the steps run in order on it.
//
//   conditional.js append --bootstrap H:P --topic T --steps JSON [--idempotent]
//
// JSON is a list of steps, each one send() of one key's events:
//   [{"key": "order-7", "expect": "none", "ids": ["e1", "e2"], "values": ["created", "paid"]}]
// `expect` goes on the first message only (the header's contract); `ids` become
// `tidelog-event-id` headers. Each step prints one JSON line: {"event": "appended",
// "step": N, "partition": P, "baseOffset": O} or {"event": "refused", "step": N, "type": ...,
// "code": ..., "retriable": ...}. Every request is bounded by kafkajs's timeouts.
'use strict'

const { Kafka, Partitioners, logLevel } = require('kafkajs')
const { parseArgs, emit, stderrLogCreator } = require('./common')

async function append(options) {
  const kafka = new Kafka({
    clientId: 'tidelog-e2e-kafkajs-conditional',
    brokers: [options.bootstrap],
    logLevel: logLevel.WARN,
    logCreator: stderrLogCreator,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
  })
  const idempotent = options.idempotent === true
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent,
    maxInFlightRequests: idempotent ? 1 : undefined,
    allowAutoTopicCreation: false,
  })
  const steps = JSON.parse(options.steps)
  await producer.connect()
  try {
    for (const [index, step] of steps.entries()) {
      const messages = step.values.map((value, i) => {
        const headers = {}
        if (i === 0 && step.expect !== undefined) headers['tidelog-expect'] = String(step.expect)
        if (step.ids) headers['tidelog-event-id'] = step.ids[i]
        return { key: step.key, value, headers }
      })
      try {
        const replies = await producer.send({ topic: options.topic, messages, acks: -1 })
        const reply = replies[0]
        emit('appended', { step: index, partition: reply.partition, baseOffset: Number(reply.baseOffset) })
      } catch (error) {
        // kafkajs wraps a non-retriable protocol error as the cause of its retry error.
        const cause = error.cause || error
        emit('refused', {
          step: index,
          name: error.name,
          type: cause.type,
          code: cause.code,
          retriable: cause.retriable,
          message: String(cause.message),
        })
      }
    }
  } finally {
    await producer.disconnect()
  }
}

async function main() {
  const { command, options } = parseArgs(process.argv.slice(2))
  if (command !== 'append') throw new Error(`unknown command ${command}`)
  return append(options)
}

main().then(
  () => process.exit(0),
  error => {
    emit('error', { message: String(error && error.message), name: error && error.name })
    process.stderr.write(`${error && error.stack}\n`)
    process.exit(1)
  }
)
