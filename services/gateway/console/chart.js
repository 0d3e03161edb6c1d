// A small SVG bar chart of per-minute counts, drawn with SVG attributes only (no inline styles).
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export function barChart(title, values, { width = 360, height = 90 } = {}) {
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height + 14}`, role: "img", class: "chart" });
  const label = `${title}: ${total} in the last ${values.length} minutes, at most ${max} in a minute`;
  root.setAttribute("aria-label", label);
  const t = svg("title", {});
  t.textContent = label;
  root.append(t);
  root.append(svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
  const w = width / Math.max(values.length, 1);
  values.forEach((v, i) => {
    const bh = (v / max) * (height - 4);
    root.append(svg("rect", { x: i * w + 0.5, y: height - bh, width: Math.max(w - 1, 1), height: bh, class: "bar" }));
  });
  const left = svg("text", { x: 0, y: height + 12, class: "tick" });
  left.textContent = `-${values.length} min`;
  const right = svg("text", { x: width, y: height + 12, class: "tick end" });
  right.textContent = "now";
  const top = svg("text", { x: 2, y: 10, class: "tick" });
  top.textContent = `max ${max}/min`;
  root.append(left, right, top);
  return root;
}
