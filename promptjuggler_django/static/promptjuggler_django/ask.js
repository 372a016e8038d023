/*
 * promptjuggler_django Ask page: shows each answer as soon as it is stored, without a reload.
 *
 * Markup (see ask.html and includes/ask_turn.html): an element with data-pj-ask-status-url holds
 * elements with data-pj-run="<id>" and data-pj-final="true|false"; inside each, a badge
 * [data-pj-badge], a sentence [data-pj-message], the answer [data-pj-answer] and the sources
 * [data-pj-sources] with their list [data-pj-source-list]. The status endpoint is polled while
 * a question waits; polling slows down after errors and pauses while the page is hidden. A new
 * answer is read out through [data-pj-announce]; [data-pj-reload-hint] (for pages without this
 * script) is hidden. The form's [data-pj-ask-submit] button is enabled once nothing waits.
 */
(function () {
  "use strict";

  var MAX_BACKOFF_MS = 30000;

  function track(root) {
    var url = root.getAttribute("data-pj-ask-status-url");
    var interval = parseInt(root.getAttribute("data-pj-poll-interval"), 10) || 2000;
    var delay = interval;
    var timer = null;
    var announcer = root.querySelector("[data-pj-announce]");
    var hint = root.querySelector("[data-pj-reload-hint]");
    var button = document.querySelector("[data-pj-ask-form] [data-pj-ask-submit]");
    if (hint) { hint.hidden = true; }

    function pending() {
      return Array.prototype.filter.call(
        root.querySelectorAll("[data-pj-run]"),
        function (el) { return el.getAttribute("data-pj-final") !== "true"; }
      );
    }

    function show(el, selector, text) {
      var target = el.querySelector(selector);
      if (target) {
        target.textContent = text || "";
        target.hidden = !text;
      }
    }

    function apply(el, item) {
      var badge = el.querySelector("[data-pj-badge]");
      var changed = badge && badge.getAttribute("data-pj-phase") !== item.phase;
      if (badge) {
        badge.textContent = item.label;
        badge.className = "pj-badge pj-badge--" + item.tone;
        badge.setAttribute("data-pj-phase", item.phase);
      }
      show(el, "[data-pj-message]", item.message);
      show(el, "[data-pj-answer]", item.answer);
      var sources = el.querySelector("[data-pj-sources]");
      var list = el.querySelector("[data-pj-source-list]");
      if (sources && list) {
        list.textContent = "";
        (item.sources || []).forEach(function (title) {
          var li = document.createElement("li");
          li.textContent = title;
          list.appendChild(li);
        });
        sources.hidden = !list.children.length;
      }
      el.setAttribute("data-pj-final", item.final ? "true" : "false");
      if (!changed) { return null; }
      var said = [item.label];
      if (item.message) { said.push(item.message); }
      if (item.answer) { said.push(item.answer); }
      return said.join(". ");
    }

    function settle() {
      if (button && !pending().length) {
        button.disabled = false;
        button.textContent = button.getAttribute("data-pj-ready-label") || button.textContent;
      }
    }

    function schedule() {
      clearTimeout(timer);
      if (pending().length && !document.hidden) {
        timer = setTimeout(poll, delay);
      }
    }

    function poll() {
      var els = pending();
      if (!els.length) { return; }
      var byId = {};
      els.forEach(function (el) { byId[el.getAttribute("data-pj-run")] = el; });
      var query = "?ids=" + encodeURIComponent(Object.keys(byId).join(","));
      fetch(url + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("status " + response.status); }
          return response.json();
        })
        .then(function (data) {
          var seen = {};
          var news = [];
          (data.runs || []).forEach(function (item) {
            seen[item.id] = true;
            var said = byId[item.id] ? apply(byId[item.id], item) : null;
            if (said) { news.push(said); }
          });
          if (announcer && news.length) { announcer.textContent = news.join(" "); }
          // Absent from the answer: no longer the user's to see. Stop asking about it.
          Object.keys(byId).forEach(function (id) {
            if (!seen[id]) { byId[id].setAttribute("data-pj-final", "true"); }
          });
          settle();
          delay = data.poll_interval_ms || interval;
          schedule();
        })
        .catch(function () {
          delay = Math.min(delay * 2, MAX_BACKOFF_MS);
          schedule();
        });
    }

    document.addEventListener("visibilitychange", schedule);
    settle();
    schedule();
  }

  // A question is sent once: the button says so while the page goes to the conversation.
  function guard(form) {
    var button = form.querySelector("[data-pj-ask-submit]");
    form.addEventListener("submit", function (event) {
      if (!button) { return; }
      if (button.disabled) { event.preventDefault(); return; }
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      button.textContent = button.getAttribute("data-pj-busy-label") || button.textContent;
    });
  }

  function init() {
    document.querySelectorAll("[data-pj-ask-status-url]").forEach(track);
    document.querySelectorAll("form[data-pj-ask-form]").forEach(guard);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
