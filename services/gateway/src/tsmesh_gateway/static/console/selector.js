// Plain series selectors (`metric{name="value", ...}`): what the label browser adds matchers to, and
// where a query's metric name comes from. Anything else (functions, ranges, operators) is left alone.

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const OP = /^(=~|!~|!=|=)/;
const STRING = /^"((?:[^"\\]|\\.)*)"/;

/** `{metric, matchers: [{name, op, value}]}` for a plain selector, else null. */
export function parseSelector(text) {
  let rest = text.trim();
  const selector = { metric: "", matchers: [] };
  const name = NAME.exec(rest);
  if (name) {
    selector.metric = name[0];
    rest = rest.slice(name[0].length).trim();
  }
  if (rest.startsWith("{")) {
    rest = rest.slice(1).trim();
    while (!rest.startsWith("}")) {
      const label = LABEL.exec(rest);
      if (!label) return null;
      rest = rest.slice(label[0].length).trim();
      const op = OP.exec(rest);
      if (!op) return null;
      rest = rest.slice(op[0].length).trim();
      const value = STRING.exec(rest);
      if (!value) return null;
      const unquoted = unquote(value[1]);
      if (unquoted === null) return null;
      selector.matchers.push({ name: label[0], op: op[0], value: unquoted });
      rest = rest.slice(value[0].length).trim();
      if (rest.startsWith(",")) rest = rest.slice(1).trim();
      else if (!rest.startsWith("}")) return null;
    }
    rest = rest.slice(1).trim();
  }
  if (rest !== "" || (!selector.metric && selector.matchers.length === 0)) return null;
  return selector;
}

function unquote(body) {
  try {
    return JSON.parse(`"${body}"`);
  } catch {
    return null;
  }
}

export function formatSelector(selector) {
  const matchers = selector.matchers.map((m) => `${m.name}${m.op}${JSON.stringify(m.value)}`);
  return matchers.length ? `${selector.metric}{${matchers.join(", ")}}` : selector.metric;
}

/** The query with `name="value"` set (replacing a matcher on the same label), or null when the query is not a plain selector. */
export function withMatcher(query, metric, name, value) {
  const selector = query.trim() ? parseSelector(query) : { metric, matchers: [] };
  if (!selector) return null;
  selector.matchers = selector.matchers.filter((m) => m.name !== name);
  selector.matchers.push({ name, op: "=", value });
  return formatSelector(selector);
}
