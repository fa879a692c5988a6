// warren console: small enhancements; every page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // "Select all" ticks every enabled checkbox of its table.
  document.querySelectorAll("[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      all.closest("table").querySelectorAll("tbody input[type=checkbox]:not(:disabled)").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });

  // A running job's page follows its progress, then reloads once done.
  var job = document.getElementById("job");
  if (job && job.dataset.done !== "true") {
    var poll = function () {
      fetch("/jobs/" + job.dataset.job + "/status", { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          document.getElementById("moved").textContent = s.moved.toLocaleString("en");
          document.getElementById("seen").textContent = s.seen.toLocaleString("en");
          document.getElementById("total").textContent = s.total.toLocaleString("en");
          var bar = document.getElementById("bar");
          bar.max = Math.max(s.total, 1);
          bar.value = s.seen;
          if (s.done) {
            window.location.reload();
          } else {
            setTimeout(poll, 500);
          }
        })
        .catch(function () { setTimeout(poll, 2000); });
    };
    setTimeout(poll, 300);
  }
});
