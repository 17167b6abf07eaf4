// mailsched dashboard: draws the progress bars and, while a listed campaign (or the
// campaign of a campaign page) is scheduled or running, polls /ui/data/progress
// every 2 s to move them and its counts; opens the Cancel confirmation dialog;
// reads a CSV file into the new-campaign form.
// The width is set through element.style (CSSOM), which the page's CSP allows.
"use strict";
(function () {
  var POLL_MS = 2000;

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

  function poll() {
    var active = rows().filter(function (r) { return r.getAttribute("data-active") === "true"; });
    if (active.length === 0) return;
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

  function confirmCancel() {
    var open = document.getElementById("cancel-open");
    var dialog = document.getElementById("cancel-dialog");
    var keep = document.getElementById("cancel-keep");
    if (!open || !dialog || !keep) return;
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

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[role="progressbar"]').forEach(draw);
    confirmCancel();
    readCsv();
    window.setTimeout(poll, POLL_MS);
  });
})();
