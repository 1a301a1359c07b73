// Calls to promptseg's HTTP API with the session token; NDJSON streams as async iterators.

export class ApiError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

async function detail(response) {
  try {
    const body = await response.json()
    if (typeof body.detail === 'string') return body.detail
    if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(1).join('.')}: ${d.msg}`).join('; ')
    return JSON.stringify(body)
  } catch {
    return `${response.status} ${response.statusText}`
  }
}

export class Api {
  constructor(token) {
    this.token = token
  }

  headers(extra = {}) {
    return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : extra
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers() }
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    const response = await fetch(path, init)
    if (!response.ok) throw new ApiError(response.status, await detail(response))
    return response
  }

  async json(method, path, body) {
    const response = await this.request(method, path, body)
    return response.status === 204 ? null : response.json()
  }

  async bytes(path) {
    const response = await this.request('GET', path)
    return response.arrayBuffer()
  }

  // POST `body` to `path` and yield each line of the NDJSON answer as an object, as it arrives.
  async *stream(path, body) {
    const response = await this.request('POST', path, body)
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += decoder.decode(value, { stream: true })
      let newline
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim()
        buffer = buffer.slice(newline + 1)
        if (line) yield JSON.parse(line)
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer)
  }
}
