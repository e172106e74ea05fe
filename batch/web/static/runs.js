// Keeps run statuses and progress bars current without a page reload.
// Rows or blocks marked data-run-id + data-status are polled while any is queued or running;
// a block marked data-reload-on-finish reloads the page once its run finishes.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script && script.dataset.progressUrl;
  var INTERVAL_MS = 1500;
  var GOING = { queued: true, running: true };

  function goingElements() {
    return Array.prototype.filter.call(
      document.querySelectorAll("[data-run-id][data-status]"),
      function (el) { return GOING[el.dataset.status]; }
    );
  }

  function update(el, run) {
    var badge = el.querySelector("[data-role=status]");
    if (badge) {
      var aggregating = run.status === "running" && run.total && run.done >= run.total;
      badge.textContent = aggregating ? "aggregating" : run.status;
      badge.className = "status " + run.status;
    }
    var bar = el.querySelector("[data-role=bar]");
    if (bar && run.total) {
      bar.style.width = (100 * run.done / run.total).toFixed(1) + "%";
    }
    var count = el.querySelector("[data-role=count]");
    if (count) {
      count.textContent = run.done + "/" + (run.total === null ? "?" : run.total);
    }
    var finished = !GOING[run.status];
    el.dataset.status = run.status;
    if (finished && el.hasAttribute("data-reload-on-finish")) {
      window.location.reload();
    }
  }

  function poll() {
    var elements = goingElements();
    if (!url || elements.length === 0) {
      return;
    }
    var ids = elements.map(function (el) { return el.dataset.runId; });
    var unique = ids.filter(function (id, i) { return ids.indexOf(id) === i; });
    fetch(url + "?ids=" + encodeURIComponent(unique.join(",")), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (!response.ok) { throw new Error("progress: HTTP " + response.status); }
        return response.json();
      })
      .then(function (body) {
        elements.forEach(function (el) {
          var run = body.runs[el.dataset.runId];
          if (run) { update(el, run); }
        });
      })
      .catch(function (error) { console.warn(error); })
      .then(function () { window.setTimeout(poll, INTERVAL_MS); });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
