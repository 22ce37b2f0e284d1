// Calls to the gateway's HTTP API. The token travels in the Authorization header only, never in a URL.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    // gateway errors carry "message", the Prometheus API's carry "error"
    message = body.message || body.error || message;
  } catch {
    // a body that is not JSON: keep the status text
  }
  return new ApiError(response.status, message);
}

async function send(method, path, { token, json, form, params } = {}) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(url, { method, headers, body, credentials: "omit", cache: "no-store" });
}

/** A call without credentials (login, refresh, logout): the parsed JSON body, or an ApiError. */
export async function anonymous(method, path, json) {
  const response = await send(method, path, { json });
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** Authenticated calls; a 401 refreshes the session once and retries. */
export class Api {
  constructor(session) {
    this.session = session;
  }

  async call(method, path, options = {}) {
    let response = await send(method, path, { ...options, token: this.session.token });
    if (response.status === 401 && (await this.session.refresh())) {
      response = await send(method, path, { ...options, token: this.session.token });
    }
    if (response.status === 401) this.session.expired();
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  /** The `data` of a Prometheus API answer. */
  async prometheus(method, path, options) {
    const answer = await this.call(method, path, options);
    return answer.data;
  }
}
