// Small DOM helpers: elements built from text nodes only (no HTML parsing of data), tables, cursor pagers, dialogs.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

// A table: columns are [header, cell(row)] pairs; an empty list says so in one row.
export function table(label, columns, rows, empty = "Nothing here.") {
  const head = h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title))));
  const body = h("tbody");
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
  for (const row of rows) body.append(h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))));
  return h("table", { "aria-label": label }, head, body);
}

// Pages through an API list by its cursors: one page in memory, a stack of cursors to go back.
export class Pager {
  constructor(load, render) {
    this.load = load; // async (cursor) => {items, next}
    this.render = render; // (items) => Node
    this.stack = [];
    this.cursor = null;
    this.next = null;
    this.root = h("div", { class: "pager" });
  }

  async show(cursor = null) {
    const { items, next } = await this.load(cursor);
    this.cursor = cursor;
    this.next = next;
    const prev = h("button", { type: "button", disabled: !this.stack.length, onclick: () => this.back() }, "Previous");
    const more = h("button", { type: "button", disabled: !next, onclick: () => this.forward() }, "Next");
    clear(this.root, this.render(items, next), h("div", { class: "pager-nav" }, prev, h("span", {}, `Page ${this.stack.length + 1}`), more));
    return items;
  }

  async forward() {
    this.stack.push(this.cursor);
    await this.show(this.next);
  }

  async back() {
    await this.show(this.stack.pop() ?? null);
  }

  reload() {
    return this.show(this.cursor);
  }
}

export function confirmDialog(message, action = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-label": "Confirm" },
      h("p", {}, message),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger", onclick: () => { dialog.close(); resolve(true); } }, action),
        h("button", { type: "button", onclick: () => { dialog.close(); resolve(false); } }, "Go back")));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function showDialog(title, ...content) {
  const dialog = h("dialog", { class: "detail", "aria-label": title },
    h("h2", {}, title), ...content,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

let toastTimer = null;
export function toast(message, kind = "info") {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.className = `toast toast-${kind} visible`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.className = "toast"; }, 5000);
}

// Runs an action from a button: disables it meanwhile, reports the outcome, and calls after() on success.
export function action(label, run, { confirm, after, cls } = {}) {
  const button = h("button", { type: "button", class: cls || "", dataset: { write: "1" } }, label);
  button.addEventListener("click", async () => {
    const question = typeof confirm === "function" ? await confirm() : confirm;
    if (question && !(await confirmDialog(question, label))) return;
    button.disabled = true;
    try {
      const result = await run();
      if (after) await after(result);
    } catch (err) {
      toast(`${label} failed: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export function pre(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h("span", { class: "field" }, h("label", { for: id }, label), input);
}

export function select(name, options, value = "") {
  return h("select", { name }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}
