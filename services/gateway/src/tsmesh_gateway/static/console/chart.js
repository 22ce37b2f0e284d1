// The zoomable time-series chart (uPlot) and its table of series. Holds the points it shows, so live
// points can be appended to the series a query drew.
import uPlot from "./vendor/uplot/uPlot.esm.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const HEIGHT = 320;

function labelsOf(labels) {
  return Object.entries(labels)
    .filter(([name]) => name !== "__name__")
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function describe(name, labels) {
  const inner = labelsOf(labels).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return inner.length ? `${name}{${inner.join(", ")}}` : name || "{}";
}

export class Chart {
  constructor(container, tableBody) {
    this.container = container;
    this.tableBody = tableBody;
    this.series = new Map(); // key -> {label, points: Map(seconds -> value)}
    this.plot = null;
    new ResizeObserver(() => this.plot && this.plot.setSize({ width: this.width(), height: HEIGHT })).observe(container);
  }

  width() {
    return Math.max(this.container.clientWidth - 16, 300);
  }

  /** Replace what is drawn by a Prometheus matrix result over `[start, end]` (seconds); `name` names
   * series whose labels lack `__name__`. */
  show(result, name, start, end) {
    this.series = new Map();
    for (const item of result) {
      const entry = this.entry(item.metric.__name__ || name, item.metric);
      for (const [t, v] of item.values) entry.points.set(Number(t), Number(v));
    }
    this.render(true);
    if (this.plot) this.plot.setScale("x", { min: start, max: end });
  }

  /** Add live points (`{metric, labels, timestamp_ns, value}`), keeping only the last `windowSeconds`. */
  append(points, windowSeconds) {
    const before = this.series.size;
    let newest = 0;
    for (const point of points) {
      const t = point.timestamp_ns / 1e9;
      this.entry(point.metric, point.labels).points.set(t, Number(point.value));
      newest = Math.max(newest, t);
    }
    const oldest = newest - windowSeconds;
    for (const { points: values } of this.series.values()) {
      for (const t of values.keys()) if (t < oldest) values.delete(t);
    }
    this.render(this.series.size !== before);
  }

  entry(name, labels) {
    const key = `${name}\u0000${JSON.stringify(labelsOf(labels))}`;
    let entry = this.series.get(key);
    if (!entry) {
      entry = { label: describe(name, labels), points: new Map() };
      this.series.set(key, entry);
    }
    return entry;
  }

  get pointCount() {
    let total = 0;
    for (const { points } of this.series.values()) total += points.size;
    return total;
  }

  render(rebuild) {
    const all = [...this.series.values()];
    const xs = [...new Set(all.flatMap((s) => [...s.points.keys()]))].sort((a, b) => a - b);
    const data = [xs, ...all.map((s) => xs.map((t) => (s.points.has(t) ? s.points.get(t) : null)))];
    if (rebuild || !this.plot) {
      if (this.plot) this.plot.destroy();
      this.plot = null;
      if (all.length) this.plot = new uPlot(this.options(all), data, this.container);
    } else {
      this.plot.setData(data);
    }
    this.container.dataset.series = String(all.length);
    this.container.dataset.points = String(this.pointCount);
    this.renderTable(all);
  }

  options(all) {
    return {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false, setScale: true } },
      series: [
        { label: "time" },
        ...all.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: true,
          points: { show: s.points.size < 60 },
        })),
      ],
    };
  }

  renderTable(all) {
    const rows = all.map((s) => {
      const row = document.createElement("tr");
      const times = [...s.points.keys()];
      const last = times.length ? s.points.get(Math.max(...times)) : null;
      for (const text of [s.label, String(s.points.size), last === null ? "" : String(last)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    });
    this.tableBody.replaceChildren(...rows);
  }
}
