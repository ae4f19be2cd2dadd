// Polls the server-rendered sections and swaps them in: the charts stay server-side SVG.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 5000;
  var content = document.getElementById("content");
  var status = document.getElementById("poll-status");
  var polls = 0;
  function poll() {
    fetch("/api/sections", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        // keep which <details> the reader closed
        var closed = Array.prototype.map.call(content.querySelectorAll("details:not([open])"), function (d) {
          return d.parentElement && d.parentElement.id;
        });
        content.innerHTML = html;
        closed.forEach(function (id) {
          var d = id && document.querySelector("#" + id + " details");
          if (d) { d.removeAttribute("open"); }
        });
        polls += 1;
        document.body.setAttribute("data-polls", String(polls));
        status.textContent = "";
      })
      .catch(function (e) { status.textContent = " · refresh failed: " + e.message; })
      .then(function () { setTimeout(poll, every); });
  }
  setTimeout(poll, every);
})();
