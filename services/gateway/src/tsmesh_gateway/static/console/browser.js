// The metric and label browser: metric names for autocomplete, the chosen metric's series count,
// its label names and their values (the Prometheus API: /api/v1/label/…/values, /api/v1/labels, /api/v1/series).

const SERIES_LIMIT = 10000;

function option(value) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = value;
  return element;
}

export class Browser {
  constructor(api, els, onPick) {
    this.api = api;
    this.els = els; // {names: datalist, count: p, labels: select, values: ul}
    this.onPick = onPick; // (label, value) => void
    this.metric = "";
  }

  /** Fill the autocomplete list with every metric name of the tenant. */
  async loadMetrics() {
    const names = await this.api.prometheus("GET", "/api/v1/label/__name__/values");
    this.els.names.replaceChildren(...names.map(option));
    return names;
  }

  async selectMetric(metric) {
    this.metric = metric;
    this.els.values.replaceChildren();
    const match = { "match[]": metric };
    const [series, labels] = await Promise.all([
      this.api.prometheus("GET", "/api/v1/series", { params: { ...match, limit: String(SERIES_LIMIT) } }),
      this.api.prometheus("GET", "/api/v1/labels", { params: match }),
    ]);
    const count = series.length >= SERIES_LIMIT ? `at least ${SERIES_LIMIT}` : String(series.length);
    this.els.count.textContent = `${count} series`;
    const first = option("");
    first.textContent = "(choose a label)";
    this.els.labels.replaceChildren(first, ...labels.filter((l) => l !== "__name__").map(option));
  }

  async selectLabel(label) {
    if (!label) {
      this.els.values.replaceChildren();
      return;
    }
    const params = this.metric ? { "match[]": this.metric } : undefined;
    const values = await this.api.prometheus("GET", `/api/v1/label/${encodeURIComponent(label)}/values`, { params });
    this.els.values.replaceChildren(
      ...values.map((value) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "chip";
        button.textContent = value;
        button.title = `add ${label}="${value}" to the query`;
        button.addEventListener("click", () => this.onPick(label, value));
        item.append(button);
        return item;
      }),
    );
  }
}
