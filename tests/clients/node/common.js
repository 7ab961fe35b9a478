// What every kafkajs client script here shares: `COMMAND --name value --flag` arguments, one
// JSON event per stdout line, and kafkajs's log on stderr (stdout is for results).
'use strict'

function parseArgs(argv) {
  const [command, ...rest] = argv
  const options = {}
  for (let i = 0; i < rest.length; i++) {
    const name = rest[i]
    if (!name.startsWith('--')) throw new Error(`unexpected argument ${name}`)
    const next = rest[i + 1]
    if (next === undefined || next.startsWith('--')) {
      options[name.slice(2)] = true
    } else {
      options[name.slice(2)] = next
      i++
    }
  }
  return { command, options }
}

function required(options, name) {
  const value = options[name]
  if (value === undefined || value === true) throw new Error(`--${name} is required`)
  return value
}

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

const stderrLogCreator = () => ({ namespace, label, log }) => {
  const { message, ...extra } = log
  process.stderr.write(`[kafkajs ${label} ${namespace}] ${message} ${JSON.stringify(extra)}\n`)
}

module.exports = { parseArgs, required, emit, stderrLogCreator }
