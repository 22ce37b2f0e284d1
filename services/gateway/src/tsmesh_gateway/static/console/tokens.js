// Token management: list, create (the secret is shown once) and revoke, through /v1/tokens.

const DAY = 86400;

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "never";
}

export class TokenPanel {
  constructor(api, els, onStatus) {
    this.api = api;
    this.els = els; // {body: tbody, secretBox, secret}
    this.onStatus = onStatus;
  }

  async load() {
    const answer = await this.api.call("GET", "/v1/tokens");
    this.els.body.replaceChildren(...answer.tokens.map((token) => this.row(token)));
  }

  row(token) {
    const row = document.createElement("tr");
    row.dataset.id = token.id;
    const state = token.revoked ? "revoked" : "active";
    const cells = [token.name, token.id, token.scopes.join(" "), when(token.created_at), when(token.expires_at)];
    cells.push(token.last_used_at ? when(token.last_used_at) : "not yet", state);
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const action = document.createElement("td");
    if (!token.revoked) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger";
      button.textContent = "Revoke";
      button.addEventListener("click", () => this.revoke(token));
      action.append(button);
    }
    row.append(action);
    return row;
  }

  async create(form) {
    const data = new FormData(form);
    const scopes = data.getAll("scope");
    const ttl = Math.round(Number(data.get("ttl_days") || 0) * DAY);
    const answer = await this.api.call("POST", "/v1/tokens", {
      json: { name: String(data.get("name")), scopes, ttl_seconds: ttl },
    });
    this.els.secret.textContent = answer.secret;
    this.els.secretBox.hidden = false;
    this.onStatus(`created token ${answer.token.name}`, false);
    await this.load();
  }

  async revoke(token) {
    if (!window.confirm(`Revoke the token "${token.name}"? Clients using it stop working.`)) return;
    await this.api.call("DELETE", `/v1/tokens/${encodeURIComponent(token.id)}`);
    this.onStatus(`revoked token ${token.name}`, false);
    await this.load();
  }

  forget() {
    this.els.secret.textContent = "";
    this.els.secretBox.hidden = true;
    this.els.body.replaceChildren();
  }
}
