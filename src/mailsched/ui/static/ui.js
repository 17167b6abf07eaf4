// mailsched dashboard. While a listed campaign (or the campaign of a campaign
// page) is scheduled or running, polls /ui/data/progress every 2 s to move its
// progress bar and numbers. A campaign page also follows the campaign's events in
// the event feed (/ui/data/events) until it ends; when new ones arrive, the page's
// live parts ([data-live]: the overview and controls, the chart, the next sends,
// the events and the deliveries) are fetched again and swapped in, at most every
// 5 s, without reloading the page. Also: the Cancel confirmation dialog, and reading a
// CSV file into the new-campaign form. Widths are set through element.style
// (CSSOM), which the page's CSP allows.
"use strict";
(function () {
  var POLL_MS = 2000;
  var REFRESH_MS = 5000;
  var cursor = null;
  var refreshedAt = 0;
  var refreshTimer = null;

  function draw(bar) {
    var fill = bar.querySelector(".fill");
    if (fill) fill.style.width = bar.getAttribute("aria-valuenow") + "%";
  }

  function text(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell) cell.textContent = value;
  }

  function update(row, c) {
    var bar = row.querySelector('[role="progressbar"]');
    bar.setAttribute("aria-valuenow", String(c.percent));
    draw(bar);
    text(row, "percent", c.percent + "%");
    text(row, "status", c.status);
    text(row, "sent", c.sent + "/" + c.total);
    text(row, "rate", c.rate);
    text(row, "completion", c.completion);
    row.setAttribute("data-active", c.active ? "true" : "false");
    Object.keys(c.counts || {}).forEach(function (status) {
      var cell = row.querySelector('[data-count="' + status + '"]');
      if (cell) cell.textContent = String(c.counts[status]);
    });
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-campaign]"));
  }

  // A campaign page's live parts, from a fresh copy of the same page. A part that
  // holds the keyboard focus or an open dialog is left as it is.
  function refresh() {
    refreshTimer = null;
    refreshedAt = Date.now();
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("page: HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        fresh.querySelectorAll("[data-live][id]").forEach(function (part) {
          var old = document.getElementById(part.id);
          if (!old || old.contains(document.activeElement) || old.querySelector("dialog[open]")) return;
          old.replaceWith(document.importNode(part, true));
        });
        bind(document);
      })
      .catch(function () { /* the next change tries again */ });
  }

  function scheduleRefresh() {
    if (refreshTimer !== null) return;
    var wait = Math.max(0, refreshedAt + REFRESH_MS - Date.now());
    refreshTimer = window.setTimeout(refresh, wait);
  }

  function poll() {
    var active = rows().filter(function (r) { return r.getAttribute("data-active") === "true"; });
    // Nothing to move now; a campaign page may resume meanwhile (see follow).
    if (active.length === 0) { window.setTimeout(poll, POLL_MS); return; }
    var ids = active.map(function (r) { return r.getAttribute("data-campaign"); });
    fetch("/ui/data/progress?ids=" + ids.join(","), { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("progress: HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        data.campaigns.forEach(function (c) {
          var row = document.querySelector('[data-campaign="' + c.id + '"]');
          if (row) update(row, c);
        });
      })
      .catch(function () { /* a missed poll is retried on the next tick */ })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }

  // A campaign page follows the campaign's events in the event feed until it ends:
  // any new event means the page's live parts may have changed.
  function follow() {
    var section = document.getElementById("campaign");
    if (!section || section.getAttribute("data-follow") !== "true") return;
    if (cursor === null) cursor = section.getAttribute("data-events");
    var url = "/ui/data/events?campaign=" + section.getAttribute("data-campaign") + "&after=" + cursor;
    fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("events: HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        cursor = data.nextCursor;
        if (data.count > 0) scheduleRefresh();
      })
      .catch(function () { /* a missed poll is retried on the next tick */ })
      .then(function () { window.setTimeout(follow, POLL_MS); });
  }

  function confirmCancel(root) {
    var open = root.getElementById("cancel-open");
    var dialog = root.getElementById("cancel-dialog");
    var keep = root.getElementById("cancel-keep");
    if (!open || !dialog || !keep || open.hasAttribute("data-bound")) return;
    open.setAttribute("data-bound", "");
    open.addEventListener("click", function () { dialog.showModal(); });
    keep.addEventListener("click", function () { dialog.close(); });
  }

  // The new-campaign form: a chosen CSV file is read into the Recipients field,
  // where it is sent and checked with the rest of the form.
  function readCsv() {
    var input = document.getElementById("csv");
    var target = document.getElementById("recipients");
    if (!input || !target) return;
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file) return;
      var reader = new FileReader();
      reader.onload = function () { target.value = String(reader.result); };
      reader.readAsText(file);
    });
  }

  function bind(root) {
    root.querySelectorAll('[role="progressbar"]').forEach(draw);
    confirmCancel(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    bind(document);
    readCsv();
    window.setTimeout(poll, POLL_MS);
    window.setTimeout(follow, POLL_MS);
  });
})();
