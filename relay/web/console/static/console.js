/* relay console: refresh the page's <main> every 5 s (paused while the tab is hidden or a
   form field has the focus) and the live tail (server-sent events). The pages work without
   this file: every action is a plain form. No inline script anywhere (CSP script-src 'self'). */
(function () {
  "use strict";

  var MAX_TAIL_LINES = 1000;

  function editing(main) {
    var el = document.activeElement;
    return !!el && main.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function autoRefresh(main) {
    var every = (parseFloat(main.getAttribute("data-refresh")) || 5) * 1000;
    var busy = false;

    function tick() {
      if (busy || document.hidden || editing(main)) return;
      busy = true;
      fetch(window.location.href, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" }
      })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector("main#content");
          if (fresh && !editing(main)) {
            main.innerHTML = fresh.innerHTML;
            main.removeAttribute("data-stale");
          }
        })
        .catch(function () {
          main.setAttribute("data-stale", "true"); /* shown by the CSS; retried next tick */
        })
        .then(function () {
          busy = false;
        });
    }

    window.setInterval(tick, every);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) tick(); /* catch up at once when the tab comes back */
    });
  }

  function liveTail(list) {
    if (!window.EventSource) return;
    var url = list.getAttribute("data-stream");
    var last = list.getAttribute("data-last-id");
    if (last) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(last);
    var status = document.getElementById("tail-status");
    var source = new EventSource(url);

    function say(text) {
      if (status) status.textContent = text;
    }

    source.onopen = function () {
      say("Live: new lines appear as the dispatch log is written.");
    };
    source.onerror = function () {
      say("Disconnected; reconnecting…");
    };
    source.onmessage = function (event) {
      var item;
      try {
        item = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      var li = document.createElement("li");
      li.className = "line";
      li.setAttribute("data-id", String(item.id));
      li.setAttribute("data-outcome", item.outcome || "");
      li.textContent = item.text;
      list.appendChild(li);
      while (list.children.length > MAX_TAIL_LINES) list.removeChild(list.firstElementChild);
      if (atBottom) li.scrollIntoView({ block: "end" });
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector("main[data-refresh]");
    if (main) autoRefresh(main);
    var tail = document.getElementById("tail");
    if (tail && tail.hasAttribute("data-stream")) liveTail(tail);
  });
})();
