// convkit report: table, filters, sorting, ratings (localStorage), CSV/JSON export.
// No network: the data are in the page (script#report-data); pictures are data: URIs or
// files beside the page. Text from the archive is only ever set with textContent.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const STATUS_RANK = { error: 0, warning: 1, info: 2, ok: 3 };
  const RATINGS = ["pass", "fail", "unsure"];
  const storageKey = "convkit-report:" + data.storage_key;
  const rows = new Map(); // card key -> tr
  let ratings = loadRatings();
  let sortState = { column: "status", direction: 1 };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function loadRatings() {
    try {
      return JSON.parse(localStorage.getItem(storageKey) || "{}") || {};
    } catch (error) {
      warn("ratings cannot be kept in this browser (" + error.message + "): export them");
      return {};
    }
  }

  function saveRatings() {
    try {
      localStorage.setItem(storageKey, JSON.stringify(ratings));
    } catch (error) {
      warn("ratings cannot be kept in this browser (" + error.message + "): export them");
    }
    document.getElementById("rated-count").textContent = ratedCount();
  }

  function warn(text) {
    const box = document.getElementById("storage-warning");
    box.textContent = text;
    box.hidden = false;
  }

  function ratedCount() {
    return Object.values(ratings).filter((r) => r.rating || r.note).length;
  }

  function findingsCell(card) {
    const td = el("td", { class: "findings" });
    if (card.findings.length) {
      const list = el("ul", { class: "findings" });
      for (const f of card.findings) {
        const item = el("li", { class: f.severity });
        item.append(el("b", {}, f.code), document.createTextNode(": " + f.message));
        if (f.hint) item.append(el("span", { class: "hint" }, f.hint));
        list.append(item);
      }
      td.append(list);
    }
    if (card.picture_note) td.append(el("div", { class: "note-text" }, card.picture_note));
    return td;
  }

  function ratingCell(card) {
    const td = el("td", { class: "rating" });
    const current = ratings[card.key] || {};
    for (const value of RATINGS) {
      const button = el("button", { type: "button", "data-rating": value }, value);
      if (current.rating === value) button.classList.add("on");
      button.addEventListener("click", () => rate(card.key, value));
      td.append(button);
    }
    const note = el("input", { type: "text", placeholder: "note", "aria-label": "note" });
    note.value = current.note || "";
    note.addEventListener("input", () => { // every keystroke: a reload loses nothing
      const entry = ratings[card.key] || {};
      entry.note = note.value;
      entry.time = new Date().toISOString();
      ratings[card.key] = entry;
      saveRatings();
    });
    td.append(note);
    return td;
  }

  function rate(key, value) {
    const entry = ratings[key] || {};
    entry.rating = entry.rating === value ? "" : value; // a second click clears it
    entry.time = new Date().toISOString();
    ratings[key] = entry;
    saveRatings();
    for (const button of rows.get(key).querySelectorAll(".rating button")) {
      button.classList.toggle("on", button.dataset.rating === entry.rating);
    }
    rows.get(key).dataset.rating = entry.rating || "unrated";
    applyFilters();
  }

  function buildRow(card) {
    const tr = el("tr", { "data-key": card.key, "data-status": card.status,
                          "data-modality": card.modality || "(none)" });
    tr.dataset.rating = (ratings[card.key] || {}).rating || "unrated";
    const thumb = el("td", { class: "thumb" });
    const img = el("img", { src: card.thumb, alt: "picture of " + card.name,
                            width: card.thumb_size[0], height: card.thumb_size[1],
                            loading: "lazy", decoding: "async" });
    img.addEventListener("click", () => openLightbox(card));
    thumb.append(img);
    tr.append(thumb, el("td", {}, ""));
    tr.lastChild.append(el("span", { class: "status " + card.status }, card.status));
    const name = el("td", { class: "name" }, card.name);
    name.append(el("div", { class: "note-text" }, card.kind));
    tr.append(name);
    tr.append(el("td", {}, card.modality));
    const description = el("td", { class: "description" }, card.description);
    if (card.patient) description.append(el("div", { class: "note-text" }, card.patient));
    if (card.folder) description.append(el("div", { class: "note-text" }, card.folder));
    tr.append(description);
    for (const column of ["shape", "voxel_mm", "orientation", "slices", "dicom2nii"]) {
      tr.append(el("td", {}, card[column]));
    }
    tr.append(findingsCell(card), ratingCell(card));
    tr.dataset.text = [card.name, card.kind, card.modality, card.description, card.folder,
                       card.dicom2nii, card.picture_note]
      .concat(card.findings.map((f) => f.code + " " + f.message)).join(" ").toLowerCase();
    return tr;
  }

  function applyFilters() {
    const status = document.getElementById("filter-status").value;
    const modality = document.getElementById("filter-modality").value;
    const rating = document.getElementById("filter-rating").value;
    const text = document.getElementById("filter-text").value.trim().toLowerCase();
    let shown = 0;
    for (const tr of rows.values()) {
      const visible = (!status || tr.dataset.status === status) &&
        (!modality || tr.dataset.modality === modality) &&
        (!rating || tr.dataset.rating === rating) &&
        (!text || tr.dataset.text.includes(text));
      tr.hidden = !visible;
      if (visible) shown += 1;
    }
    document.getElementById("shown-count").textContent = shown + " of " + rows.size + " shown";
  }

  function sortValue(card, column) {
    if (column === "status") return STATUS_RANK[card.status];
    if (column === "findings") return -card.findings.length;
    if (column === "slices") return card.slices === null ? Infinity : card.slices;
    if (column === "rating") return (ratings[card.key] || {}).rating || "~";
    return String(card[column] || "").toLowerCase();
  }

  function sortBy(column) {
    const direction = sortState.column === column ? -sortState.direction : 1;
    sortState = { column, direction };
    const cards = data.cards.slice().sort((a, b) => {
      const x = sortValue(a, column), y = sortValue(b, column);
      if (x < y) return -direction;
      if (x > y) return direction;
      return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
    });
    const body = document.getElementById("cards");
    for (const card of cards) body.append(rows.get(card.key));
    for (const th of document.querySelectorAll("th[data-column]")) {
      th.setAttribute("aria-sort", th.dataset.column !== column ? "none"
        : direction > 0 ? "ascending" : "descending");
    }
  }

  function openLightbox(card) {
    const box = document.getElementById("lightbox");
    box.querySelector("img").src = card.full;
    box.querySelector(".caption").textContent = card.name + "  " + card.description;
    box.hidden = false;
  }

  function closeLightbox() {
    const box = document.getElementById("lightbox");
    box.hidden = true;
    box.querySelector("img").removeAttribute("src");
  }

  function exportRows() {
    return data.cards.map((card) => {
      const entry = ratings[card.key] || {};
      return { key: card.key, kind: card.kind, name: card.name, modality: card.modality,
               description: card.description, status: card.status,
               rating: entry.rating || "", note: entry.note || "", rated_at: entry.time || "" };
    });
  }

  function csvCell(value) {
    const text = String(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function download(name, type, content) {
    const link = el("a", { download: name });
    link.href = URL.createObjectURL(new Blob([content], { type }));
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function exportCsv() {
    const items = exportRows();
    const columns = Object.keys(items[0] || { key: "" });
    const lines = [columns.join(",")].concat(
      items.map((item) => columns.map((c) => csvCell(item[c])).join(",")));
    download("ratings.csv", "text/csv", lines.join("\n") + "\n");
  }

  function exportJson() {
    const document_ = { input: data.input, exported: new Date().toISOString(),
                        ratings: exportRows() };
    download("ratings.json", "application/json", JSON.stringify(document_, null, 1) + "\n");
  }

  function init() {
    const body = document.getElementById("cards");
    for (const card of data.cards) {
      const tr = buildRow(card);
      rows.set(card.key, tr);
      body.append(tr);
    }
    const modalities = [...new Set(data.cards.map((c) => c.modality || "(none)"))].sort();
    const select = document.getElementById("filter-modality");
    for (const m of modalities) select.append(el("option", { value: m }, m));
    for (const id of ["filter-status", "filter-modality", "filter-rating"]) {
      document.getElementById(id).addEventListener("change", applyFilters);
    }
    document.getElementById("filter-text").addEventListener("input", applyFilters);
    for (const th of document.querySelectorAll("th[data-column]")) {
      th.addEventListener("click", () => sortBy(th.dataset.column));
    }
    document.getElementById("export-csv").addEventListener("click", exportCsv);
    document.getElementById("export-json").addEventListener("click", exportJson);
    document.getElementById("lightbox").addEventListener("click", closeLightbox);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeLightbox();
    });
    document.getElementById("rated-count").textContent = ratedCount();
    applyFilters();
  }

  init();
})();
