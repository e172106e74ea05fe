// Schedule pages: confirm deletes, redraw the params fields when the job changes, and show
// the next five fire times as the cron line or interval is typed. No network beyond this site.
(function () {
  "use strict";

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  var form = document.getElementById("schedule-form");
  if (!form) return;
  var jobs = JSON.parse(document.getElementById("schedule-jobs").textContent);

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] !== null && attrs[key] !== undefined && attrs[key] !== false) {
        node.setAttribute(key, attrs[key] === true ? "" : attrs[key]);
      }
    });
    if (text) node.textContent = text;
    return node;
  }

  // The same markup as the param_input macro in _params.html.
  function paramField(spec) {
    var box = el("div", { class: "param", "data-param": spec.name });
    var label = el("label", { for: "param-" + spec.name }, spec.label + " ");
    label.appendChild(el("span", { class: "hint" }, "(" + spec.hint + ")"));
    box.appendChild(label);
    var name = "params." + spec.name;
    if (spec.input === "checkbox") {
      box.appendChild(el("input", { type: "hidden", name: name, value: "false" }));
      box.appendChild(el("input", {
        type: "checkbox", id: "param-" + spec.name, name: name, value: "true",
        checked: spec.default === true,
      }));
    } else {
      box.appendChild(el("input", {
        type: spec.input, id: "param-" + spec.name, name: name, placeholder: spec.placeholder,
        step: spec.input === "number" ? (spec.type === "number" ? "any" : "1") : null,
        min: spec.minimum, max: spec.maximum,
      }));
    }
    if (spec.description) box.appendChild(el("p", { class: "muted small" }, spec.description));
    return box;
  }

  function drawParams() {
    var name = form.elements.job.value;
    var job = jobs[name];
    var container = document.getElementById("params-fields");
    container.replaceChildren();
    document.getElementById("job-about").textContent =
      job ? (job.description ? job.description + " " : "") + "Queue: " + job.queue + "." : "";
    var fields = job ? job.fields : [];
    fields.forEach(function (spec) { container.appendChild(paramField(spec)); });
    if (!fields.length) container.appendChild(el("p", { class: "muted small" }, "This job takes no params."));
    document.getElementById("params-job").value = name;
  }

  form.elements.job.addEventListener("change", drawParams);

  var preview = document.getElementById("preview");
  var timer = null;
  var asked = 0;

  function show(nodes) {
    preview.replaceChildren.apply(preview, nodes);
  }

  function showPreview(body, status) {
    if (status === 200 && body.times) {
      var list = el("ol", { class: "upcoming" });
      body.shown.forEach(function (time) { list.appendChild(el("li", {}, time)); });
      show([el("p", { class: "muted small" }, "Next five runs:"), list]);
    } else if (body && body.errors) {
      show(Object.keys(body.errors).map(function (key) {
        return el("p", { class: "field-error" }, key + ": " + body.errors[key]);
      }));
    } else {
      show([el("p", { class: "muted small" }, "Preview unavailable.")]);
    }
  }

  function refresh() {
    var cron = form.elements.cron.value.trim();
    var interval = form.elements.interval_seconds.value.trim();
    if (!cron && !interval) {
      show([el("p", { class: "muted small" }, "Type a cron line or an interval to see the next runs.")]);
      return;
    }
    var query = new URLSearchParams({
      cron: cron, timezone: form.elements.timezone.value.trim(), interval_seconds: interval,
    });
    var ticket = ++asked;
    fetch(form.dataset.previewUrl + "?" + query.toString(), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).then(function (response) {
      return response.json().then(function (body) { return [body, response.status]; });
    }).then(function (answer) {
      if (ticket === asked) showPreview(answer[0], answer[1]);
    }).catch(function () {
      if (ticket === asked) showPreview(null, 0);
    });
  }

  ["cron", "timezone", "interval_seconds"].forEach(function (name) {
    form.elements[name].addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 250);
    });
  });
  refresh();
})();
