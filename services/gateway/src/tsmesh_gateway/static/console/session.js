// Who is signed in. The tokens live in sessionStorage: they survive a reload of the tab but not
// its closing, are never written to a cookie or a URL, and are removed at logout (docs/adr/0503).
import { anonymous } from "./api.js";

const KEY = "tsmesh.console.session";

export class Session {
  constructor(storage = window.sessionStorage) {
    this.storage = storage;
    this.state = null;
    try {
      this.state = JSON.parse(storage.getItem(KEY) || "null");
    } catch {
      storage.removeItem(KEY); // unreadable: sign in again
    }
    this.onExpired = () => {};
    this.onRefreshed = () => {};
  }

  get token() {
    return this.state ? this.state.access : "";
  }

  get signedIn() {
    return Boolean(this.state);
  }

  save(state) {
    this.state = state;
    this.storage.setItem(KEY, JSON.stringify(state));
  }

  async loginWithPassword(tenant, email, password) {
    this.savePair(await anonymous("POST", "/v1/auth/login", { tenant, email, password }));
  }

  savePair(pair) {
    this.save({ access: pair.access_token, refresh: pair.refresh_token, expires: Date.now() + pair.expires_in * 1000 });
  }

  /** A password session whose access token ends within `marginMs` (renew it before the stream is closed). */
  expiresWithin(marginMs) {
    return Boolean(this.state && this.state.refresh && this.state.expires - Date.now() < marginMs);
  }

  useToken(token) {
    this.save({ access: token, refresh: "" });
  }

  /** Renew an expired access token with the refresh token; false when there is none or it failed. */
  async refresh() {
    if (!this.state || !this.state.refresh) return false;
    try {
      this.savePair(await anonymous("POST", "/v1/auth/refresh", { refresh_token: this.state.refresh }));
      this.onRefreshed();
      return true;
    } catch {
      return false;
    }
  }

  expired() {
    this.clear();
    this.onExpired();
  }

  async logout() {
    const refresh = this.state && this.state.refresh;
    this.clear();
    if (refresh) {
      try {
        await anonymous("POST", "/v1/auth/logout", { refresh_token: refresh });
      } catch {
        // the local session is gone either way
      }
    }
  }

  clear() {
    this.state = null;
    this.storage.removeItem(KEY);
  }
}
