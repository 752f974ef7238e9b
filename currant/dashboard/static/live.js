/* Currant dashboard: live updates. Part of Currant (MIT licence, see the
 * project's licence); no dependencies, no build step.
 *
 * The server sends a "change" event (server-sent events, at most one a
 * second) when the queue changed; the page then fetches itself again and
 * swaps in its live region ([data-live]). Pages work without this file.
 */
(function () {
  "use strict";
  var events = document.body.getAttribute("data-events");
  if (!window.EventSource || !events || !document.querySelector("[data-live]")) { return; }
  var status = document.getElementById("live-status");
  var busy = false, again = false, refreshed = 0;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Currant-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var current = document.querySelector("[data-live]");
        if (fresh && current) {
          current.replaceWith(document.importNode(fresh, true));
          refreshed += 1;
          document.body.setAttribute("data-refreshed", String(refreshed));
        }
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var source = new EventSource(events);
  source.addEventListener("change", refresh);
  source.addEventListener("open", function () {
    if (status) { status.className = "live-status on"; }
  });
  source.addEventListener("error", function () {
    if (status) { status.className = "live-status off"; }
  });
})();
