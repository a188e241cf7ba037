(function () {
  "use strict";
  // Sortable tables and the best/all toggle of a flowbatch leaderboard. Runs from file://
  // with nothing fetched. Cells carry their raw value in data-sort (empty: missing).

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "") { return null; }
    if (numeric) {
      var n = parseFloat(raw);
      return isNaN(n) ? null : n;
    }
    return raw;
  }

  function compare(a, b, numeric) {
    if (numeric) { return a - b; }
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  // Sort the rows of table by column index; missing values go last in both directions,
  // equal values keep their current (ranked) order: Array.prototype.sort is stable.
  function sortTable(table, index, descending) {
    var header = table.tHead.rows[0].cells[index];
    var numeric = header.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellValue(r1, index, numeric), b = cellValue(r2, index, numeric);
      if (a === null || b === null) { return (a === null) - (b === null); }
      var c = compare(a, b, numeric);
      return descending ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.classList.contains("sortable")) { th.setAttribute("aria-sort", "none"); }
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function onHeaderClick(event) {
    var th = event.currentTarget;
    var table = th.closest("table");
    var current = th.getAttribute("aria-sort");
    // First click: the column's natural direction (a result's ranking order); then toggle.
    var descending = current === "none" || !current
      ? th.getAttribute("data-first") === "desc"
      : current === "ascending";
    sortTable(table, th.cellIndex, descending);
  }

  function showView(name) {
    document.querySelectorAll("[data-view]").forEach(function (section) {
      section.hidden = section.getAttribute("data-view") !== name;
    });
    document.querySelectorAll("[data-view-button]").forEach(function (button) {
      button.setAttribute("aria-selected", String(button.getAttribute("data-view-button") === name));
    });
  }

  function visibleOrder() {
    var section = document.querySelector("[data-view]:not([hidden])");
    var table = section && section.querySelector("table.ranking");
    if (!table) { return []; }
    return Array.prototype.map.call(table.tBodies[0].rows, function (row) {
      return row.getAttribute("data-run");
    });
  }

  // #selftest=view:all,click:score,click:score performs those actions with real click
  // events on the real controls and writes what the page shows into #selftest-result, so
  // a headless browser's --dump-dom can check the sorting code itself.
  function selfTest(spec) {
    var log = [];
    spec.split(",").forEach(function (step) {
      var parts = step.split(":"), what = parts[0], arg = decodeURIComponent(parts[1] || "");
      if (what === "view") {
        document.querySelector('[data-view-button="' + arg + '"]').click();
      } else if (what === "click" || what === "key") {
        var section = document.querySelector("[data-view]:not([hidden])");
        var th = section.querySelector('th[data-key="' + arg + '"]');
        if (what === "click") {
          th.click();
        } else {  // Enter on the header, as the keyboard gives it
          th.focus();
          document.activeElement.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
        }
        log.push({ key: arg, sort: th.getAttribute("aria-sort") });
      }
    });
    var out = document.getElementById("selftest-result");
    out.textContent = JSON.stringify({ order: visibleOrder(), clicks: log });
  }

  // Without this script the page shows both tables, one after the other, and no sort
  // controls: the tabs, the sort marks and the hidden view come with it.
  document.documentElement.classList.add("js");
  document.querySelectorAll("th.sortable").forEach(function (th) {
    th.setAttribute("aria-sort", "none");
    th.tabIndex = 0;  // sorted from the keyboard too: Enter or Space
    th.addEventListener("click", onHeaderClick);
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onHeaderClick(event);
      }
    });
  });
  document.querySelectorAll("[data-view-button]").forEach(function (button) {
    button.addEventListener("click", function () { showView(button.getAttribute("data-view-button")); });
  });
  document.querySelectorAll(".tabs").forEach(function (tabs) { tabs.hidden = false; });
  showView("best");
  var match = /^#selftest=?(.*)$/.exec(window.location.hash);
  if (match) {
    try { selfTest(match[1]); } catch (err) {
      document.getElementById("selftest-result").textContent = JSON.stringify({ error: String(err) });
    }
  }
}());
