// The results browser: /v1/runs drawn as tables, report files linked, plots shown.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
}

function fileUrl(path) {
  return "runs/files/" + path.split("/").map(encodeURIComponent).join("/");
}

function table(caption, head, rows) {
  const t = el("table");
  t.append(el("caption", {}, caption));
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", {}, h)));
  t.append(tr);
  for (const cells of rows) {
    const r = el("tr");
    for (const c of cells) r.append(typeof c === "string" ? el("td", {}, c) : el("td", c.best ? { class: "best" } : {}, c.text));
    t.append(r);
  }
  return t;
}

function draw(data) {
  $("root").textContent = "Run folders under " + data.root + ": mean ± sample std over seeds; best mean per column in bold.";
  const comparisons = $("comparisons");
  if (!data.comparisons.length) comparisons.textContent = "No run folder (with summary.json) found.";
  for (const c of data.comparisons) {
    comparisons.append(
      table(c.dataset + " (" + c.task + "), " + c.split, ["run", "seeds", ...c.columns], c.rows.map((r) => [r.run, String(r.seeds), ...r.cells]))
    );
  }
  const runs = $("runs");
  for (const r of data.runs) {
    const box = el("div");
    box.append(el("h3", {}, r.name));
    box.append(el("p", { class: "hint" }, "model " + r.model + " on " + r.dataset + ", seeds " + r.seeds.join(", ") + (r.finished ? ", finished " + r.finished : "")));
    if (r.table.rows.length) box.append(table("per split", ["split", ...r.table.columns], r.table.rows));
    if (r.summary_md) {
      const a = el("a", { href: fileUrl(r.summary_md) }, "summary.md");
      box.append(a);
    }
    runs.append(box);
  }
  const files = $("files");
  const folders = {};
  for (const f of data.files) (folders[f.folder] = folders[f.folder] || []).push(f);
  if (!data.files.length) files.textContent = "No reports (sentangle report, compare) found.";
  for (const [folder, list] of Object.entries(folders)) {
    files.append(el("h3", {}, folder === "." ? data.root : folder));
    const links = el("p");
    const plots = el("div", { class: "plots" });
    for (const f of list) {
      if (f.kind === "png") {
        const fig = el("figure");
        fig.append(el("img", { src: fileUrl(f.path), alt: f.path, loading: "lazy" }), el("figcaption", {}, f.path.split("/").pop()));
        plots.append(fig);
      } else {
        links.append(el("a", { href: fileUrl(f.path) }, f.path.split("/").pop()), " ");
      }
    }
    files.append(links, plots);
  }
}

fetch("v1/runs")
  .then((r) => r.json().then((d) => (r.ok ? draw(d) : Promise.reject(new Error(d.detail)))))
  .catch((e) => {
    $("error").textContent = "Cannot read the runs: " + e.message;
    $("error").hidden = false;
  });
