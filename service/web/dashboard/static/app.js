// HTTP Job Runner dashboard: live updates only. Every page works without this file.
// No third-party code; served from /ui/static with a content hash (service/web/dashboard/assets.py).
"use strict";

(function () {
  var LIST_REFRESH_MS = 3000;
  var MAX_OUTPUT_CHARS = 2000000; // the page keeps the newest output past this

  // Buttons that ask first (cancel).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  // The jobs list refreshes its table while the page is visible.
  function refreshList(listing) {
    var url = listing.getAttribute("data-refresh");
    url += (url.indexOf("?") < 0 ? "?" : "&") + "rows=1";
    var busy = false;
    window.setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) return null; // signed out: leave the page be
          return response.text();
        })
        .then(function (html) {
          if (html !== null && html !== listing.innerHTML) listing.innerHTML = html;
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, LIST_REFRESH_MS);
  }

  // A running job's output follows live: the server's SSE stream (`output`, `gap`, `end`
  // events), which EventSource resumes after a reconnection with Last-Event-ID.
  function followOutput(pre) {
    var status = document.getElementById("follow-state");
    var badge = document.getElementById("state");
    var source = new EventSource(pre.getAttribute("data-follow"));
    function say(text) { if (status) status.textContent = text; }
    function append(text) {
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(text));
      if (pre.textContent.length > MAX_OUTPUT_CHARS) {
        pre.textContent = pre.textContent.slice(-MAX_OUTPUT_CHARS);
      }
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    source.addEventListener("open", function () { say("following…"); });
    source.addEventListener("output", function (event) { append(JSON.parse(event.data)); });
    source.addEventListener("gap", function (event) {
      var gap = JSON.parse(event.data);
      append("\n[… " + (gap.to - gap.from) + " bytes not kept …]\n");
    });
    source.addEventListener("end", function (event) {
      source.close();
      var end = JSON.parse(event.data);
      say("ended: " + end.state);
      if (badge) {
        badge.textContent = end.state;
        badge.className = "badge state-" + end.state;
      }
      // the page's buttons and fields change with the end: show the final page
      window.setTimeout(function () { window.location.reload(); }, 1000);
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) say("reconnecting…");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var listing = document.getElementById("listing");
    if (listing) refreshList(listing);
    var pre = document.getElementById("output");
    if (pre && pre.hasAttribute("data-follow")) {
      pre.scrollTop = pre.scrollHeight;
      followOutput(pre);
    }
  });
})();
