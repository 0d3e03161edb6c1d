// Overview: queues (depth by priority, in flight, delayed, dead), workers, activity charts, readiness.
import { api } from "/console/api.js";
import { barChart } from "/console/chart.js";
import { badge, clear, h, table } from "/console/ui.js";

const POLL_MS = 3000;
const PRIORITIES = ["critical", "high", "normal", "low", "bulk"];

function queueTable(queues) {
  const names = Object.keys(queues);
  const levels = PRIORITIES.filter((p) => names.some((n) => p in queues[n].depth));
  const extra = [...new Set(names.flatMap((n) => Object.keys(queues[n].depth)))].filter((p) => !levels.includes(p));
  const columns = [
    ["Queue", (q) => q.name],
    ...[...levels, ...extra].map((p) => [p, (q) => q.depth[p] ?? 0]),
    ["In flight", (q) => q.in_flight],
    ["Delayed", (q) => q.delayed],
    ["Dead", (q) => q.dead],
    ["Oldest (s)", (q) => q.oldest_age_seconds],
    ["Workers", (q) => (q.workers ? q.workers : badge("none", "bad"))],
    ["Done/min", (q) => q.processed_last_minute],
  ];
  return table("Queues", columns, names.map((name) => ({ name, ...queues[name] })));
}

function readiness(ready) {
  return h("dl", { class: "checks" }, Object.entries(ready.checks).flatMap(([name, state]) => [
    h("dt", {}, name.replace("_", " ")),
    h("dd", {}, badge(state, state === "ok" ? "ok" : "bad")),
  ]));
}

async function readyz() {
  const response = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
  return response.json();
}

export async function render(root, ctx) {
  const health = h("section", { "aria-labelledby": "h-health" }, h("h2", { id: "h-health" }, "Health"));
  const queues = h("section", { "aria-labelledby": "h-queues" }, h("h2", { id: "h-queues" }, "Queues"));
  const charts = h("section", { "aria-labelledby": "h-activity" }, h("h2", { id: "h-activity" }, "Last hour"));
  const stamp = h("p", { class: "muted", "aria-live": "off" });
  root.append(h("h1", {}, "Overview"), stamp, health, queues, charts);
  const healthBody = h("div");
  const queueBody = h("div");
  const chartBody = h("div", { class: "charts" });
  health.append(healthBody);
  queues.append(queueBody);
  charts.append(chartBody);

  async function refresh() {
    const [ready, stats, activity] = await Promise.all([
      readyz(),
      ctx.isAdmin ? api("GET", "/v1/queues") : null,
      ctx.isAdmin ? api("GET", "/v1/activity?minutes=60") : null,
    ]);
    if (!ctx.current()) return;
    clear(healthBody, h("p", {}, "Gateway: ", badge(ready.status, ready.status === "ready" ? "ok" : "bad")), readiness(ready));
    if (stats) {
      const workers = {};
      for (const q of Object.values(stats.queues)) workers.any = (workers.any || 0) + q.workers;
      clear(queueBody, queueTable(stats.queues));
      clear(chartBody,
        h("figure", {}, barChart("Documents embedded per minute", activity.embedded), h("figcaption", {}, "Documents embedded per minute")),
        h("figure", {}, barChart("Webhook attempts per minute", activity.deliveries), h("figcaption", {}, "Webhook deliveries (attempts) per minute")));
    } else {
      clear(queueBody, h("p", { class: "muted" }, "Queue statistics need an admin key."));
      clear(chartBody, h("p", { class: "muted" }, "Activity charts need an admin key."));
    }
    stamp.textContent = `Updated ${new Date().toLocaleTimeString()} (every ${POLL_MS / 1000} s)`;
  }

  await refresh();
  ctx.every(POLL_MS, () => refresh().catch((err) => { stamp.textContent = `Update failed: ${err.message}`; }));
}
