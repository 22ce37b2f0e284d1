// Live mode: one WebSocket to /v1/stream on this origin. The token goes in the first message
// (`{"type": "auth"}`), never in the URL; the server's pings are answered.

const PROTOCOL = "tsmesh.json.v1";
const SUBSCRIPTION = "console";

export class LiveFeed {
  constructor(token, onPoints, onStatus) {
    this.token = token;
    this.onPoints = onPoints;
    this.onStatus = onStatus;
    this.socket = null;
  }

  get running() {
    return this.socket !== null;
  }

  /** Subscribe to a PromQL series selector (the gateway's query service parses it, ADR 0311). */
  start(promql) {
    this.stop();
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}/v1/stream`, [PROTOCOL]);
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", token: this.token() }));
      socket.send(JSON.stringify({ type: "subscribe", id: SUBSCRIPTION, promql }));
      this.onStatus("live: connecting", false);
    });
    socket.addEventListener("message", (event) => this.receive(socket, JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onStatus(`live: stream closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`, true);
    });
  }

  /** Hand the open socket a renewed token (the server then follows the new token's expiry). */
  reauth() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "auth", token: this.token() }));
    }
  }

  receive(socket, frame) {
    if (frame.type === "points") this.onPoints(frame.points);
    else if (frame.type === "ack" && frame.op === "subscribe") this.onStatus("live: subscribed", false);
    else if (frame.type === "ping") socket.send(JSON.stringify({ type: "pong", time_ns: frame.time_ns }));
    else if (frame.type === "error") this.onStatus(`live: ${frame.code}: ${frame.message}`, true);
  }

  stop() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "live mode off");
  }
}
