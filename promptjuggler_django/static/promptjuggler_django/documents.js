/*
 * promptjuggler_django live status: polls a status endpoint and updates the page in place.
 *
 * Documents (see includes/document_table.html): an element with data-pj-status-url holds elements
 * with data-pj-document="<id>" and data-pj-final="true|false"; inside each, a badge
 * [data-pj-badge], and optionally [data-pj-detail], [data-pj-chunks] and [data-pj-error].
 *
 * Questions on the Ask page (see ask.html, includes/ask_turn.html): an element with
 * data-pj-ask-status-url holds elements with data-pj-run="<id>" and data-pj-final; inside each,
 * [data-pj-badge], [data-pj-message], the answer [data-pj-answer] and [data-pj-sources] with its
 * list [data-pj-source-list]. The form's [data-pj-ask-submit] button is enabled once nothing
 * waits.
 *
 * Polling stops once every item is final, slows down after errors and pauses while the page is
 * hidden. Changes are announced through the root's [data-pj-announce] live region; the root's
 * [data-pj-reload-hint] (shown when this script does not run) is hidden.
 */
(function () {
  "use strict";

  var MAX_BACKOFF_MS = 30000;

  // Follow the items of `root` (elements with the `item` attribute holding their id) that are
  // not final: ask `url` about them, hand each answered one to `apply` (which returns what to
  // announce, or null), and call `settled` after each answer.
  function follow(root, url, item, key, apply, settled) {
    var interval = parseInt(root.getAttribute("data-pj-poll-interval"), 10) || 2000;
    var delay = interval;
    var timer = null;
    var announcer = root.querySelector("[data-pj-announce]");
    var hint = root.querySelector("[data-pj-reload-hint]");
    if (hint) { hint.hidden = true; }

    function pending() {
      return Array.prototype.filter.call(
        root.querySelectorAll("[" + item + "]"),
        function (el) { return el.getAttribute("data-pj-final") !== "true"; }
      );
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
      els.forEach(function (el) { byId[el.getAttribute(item)] = el; });
      var query = "?ids=" + encodeURIComponent(Object.keys(byId).join(","));
      fetch(url + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("status " + response.status); }
          return response.json();
        })
        .then(function (data) {
          var seen = {};
          var news = [];
          (data[key] || []).forEach(function (found) {
            seen[found.id] = true;
            var el = byId[found.id];
            if (!el) { return; }
            var said = apply(el, found);
            el.setAttribute("data-pj-final", found.final ? "true" : "false");
            if (said) { news.push(said); }
          });
          if (announcer && news.length) { announcer.textContent = news.join(". "); }
          // Absent from the answer: gone meanwhile, or not the user's. Stop asking about it.
          Object.keys(byId).forEach(function (id) {
            if (!seen[id]) { byId[id].setAttribute("data-pj-final", "true"); }
          });
          if (settled) { settled(pending().length); }
          delay = data.poll_interval_ms || interval;
          schedule();
        })
        .catch(function () {
          delay = Math.min(delay * 2, MAX_BACKOFF_MS);
          schedule();
        });
    }

    document.addEventListener("visibilitychange", schedule);
    if (settled) { settled(pending().length); }
    schedule();
  }

  // Update a badge in place; whether its phase changed.
  function updateBadge(el, item) {
    var badge = el.querySelector("[data-pj-badge]");
    var changed = badge && badge.getAttribute("data-pj-phase") !== item.phase;
    if (badge) {
      badge.textContent = item.label;
      badge.className = "pj-badge pj-badge--" + item.tone;
      badge.setAttribute("data-pj-phase", item.phase);
    }
    return changed;
  }

  // Set an element's text, hiding it while there is none.
  function showText(el, selector, text) {
    var target = el.querySelector(selector);
    if (target) {
      target.textContent = text || "";
      target.hidden = !text;
    }
  }

  function applyDocument(el, item) {
    var changed = updateBadge(el, item);
    var chunks = el.querySelector("[data-pj-chunks]");
    if (chunks) {
      // PromptJuggler reports 0 chunks until processing ends: show a count once ready.
      var ready = item.phase === "ready" && item.chunk_count !== null;
      chunks.textContent = ready ? String(item.chunk_count) : "\u2014";
    }
    showText(el, "[data-pj-error]", item.error);
    showText(el, "[data-pj-detail]", item.detail);
    return changed ? (item.name ? item.name + ": " : "") + (item.detail || item.label) : null;
  }

  function applyQuestion(el, item) {
    var changed = updateBadge(el, item);
    showText(el, "[data-pj-message]", item.message);
    showText(el, "[data-pj-answer]", item.answer);
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
    if (!changed) { return null; }
    return [item.label, item.message, item.answer].filter(Boolean).join(". ");
  }

  // The Ask form's button: enabled once no question waits; while a question is sent it says so
  // and a second click sends nothing.
  function askButton() {
    return document.querySelector("form[data-pj-ask-form] [data-pj-ask-submit]");
  }

  function enableAsking(waiting) {
    var button = askButton();
    if (button && !waiting && button.getAttribute("aria-busy") !== "true") {
      button.disabled = false;
      button.textContent = button.getAttribute("data-pj-ready-label") || button.textContent;
    }
  }

  function guardAskForm(form) {
    form.addEventListener("submit", function (event) {
      var button = askButton();
      if (!button) { return; }
      if (button.disabled) { event.preventDefault(); return; }
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      button.textContent = button.getAttribute("data-pj-busy-label") || button.textContent;
    });
  }

  // Sizes in the browser's language, without strings to translate here.
  function formatSize(bytes) {
    var units = [["byte", 1], ["kilobyte", 1024], ["megabyte", 1048576], ["gigabyte", 1073741824]];
    var unit = units[0];
    units.forEach(function (u) { if (bytes >= u[1]) { unit = u; } });
    var value = bytes / unit[1];
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined, {
        style: "unit", unit: unit[0], maximumFractionDigits: 1,
        unitDisplay: unit[0] === "byte" ? "long" : "short"
      }).format(value);
    } catch (e) {
      return value.toFixed(1) + " " + unit[0];
    }
  }

  // Why the form will refuse this file, in the page's words, or "" (the server checks again).
  function refusal(input, list, file) {
    var accept = (input.getAttribute("accept") || "").toLowerCase().split(",").filter(Boolean);
    var dot = file.name.lastIndexOf(".");
    var extension = dot < 0 ? "" : file.name.slice(dot).toLowerCase();
    if (accept.length && accept.indexOf(extension) < 0) {
      return list.getAttribute("data-pj-type-warning") || "";
    }
    var max = parseInt(list.getAttribute("data-pj-max-size"), 10);
    if (max && file.size > max) { return list.getAttribute("data-pj-size-warning") || ""; }
    return "";
  }

  function listFiles(input) {
    var list = document.querySelector('[data-pj-file-list-for="' + input.id + '"]');
    if (!list) { return; }
    input.addEventListener("change", function () {
      list.textContent = "";
      Array.prototype.forEach.call(input.files || [], function (file) {
        var li = document.createElement("li");
        var name = document.createElement("span");
        var size = document.createElement("span");
        name.textContent = file.name;
        size.textContent = formatSize(file.size);
        li.appendChild(name);
        li.appendChild(size);
        var why = refusal(input, list, file);
        if (why) {
          var warning = document.createElement("span");
          warning.className = "pj-file-list__warning";
          warning.setAttribute("data-pj-file-warning", "");
          warning.textContent = why;
          li.className = "pj-file-list__item--refused";
          li.appendChild(warning);
        }
        list.appendChild(li);
      });
      list.hidden = !list.children.length;
    });
  }

  // While the upload runs: the button is disabled and says so, a bar shows how much was sent.
  // The request goes by XMLHttpRequest (for its upload progress) and asks for a short answer:
  // on success the page goes where a normal submit would have redirected; a refused upload
  // comes back as the form with its errors, which takes the place of this one. Any other
  // answer, or no script at all, leaves it to the browser's own submit.
  function uploadWithProgress(form) {
    var button = form.querySelector("[type=submit]");
    var bar = form.querySelector("[data-pj-upload-progress]");
    form.addEventListener("submit", function (event) {
      if (!window.XMLHttpRequest || !window.FormData || !window.DOMParser || !button) { return; }
      event.preventDefault();
      if (button.disabled) { return; }
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      button.textContent = button.getAttribute("data-pj-busy-label") || button.textContent;
      if (bar) { bar.hidden = false; bar.removeAttribute("value"); }
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action || window.location.href);
      xhr.setRequestHeader("X-PJ-Upload", "progress");
      xhr.upload.addEventListener("progress", function (e) {
        if (bar && e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); }
      });
      xhr.addEventListener("load", function () {
        var type = xhr.getResponseHeader("Content-Type") || "";
        if (xhr.status === 200 && type.indexOf("application/json") === 0) {
          window.location.assign(JSON.parse(xhr.responseText).location);
          return;
        }
        var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var refused = page.querySelector("form[data-pj-upload-form]");
        if (xhr.status === 200 && refused) {
          refused = document.importNode(refused, true);
          form.parentNode.replaceChild(refused, form);
          enhanceUploadForm(refused);
          var first = refused.querySelector(".pj-errors");
          if (first) { first.setAttribute("tabindex", "-1"); first.focus(); }
          return;
        }
        HTMLFormElement.prototype.submit.call(form);
      });
      xhr.addEventListener("error", function () { HTMLFormElement.prototype.submit.call(form); });
      xhr.send(new FormData(form));
    });
  }

  function enhanceUploadForm(form) {
    form.querySelectorAll("input[type=file]").forEach(listFiles);
    uploadWithProgress(form);
  }

  function init() {
    document.querySelectorAll("[data-pj-status-url]").forEach(function (root) {
      var url = root.getAttribute("data-pj-status-url");
      follow(root, url, "data-pj-document", "documents", applyDocument, null);
    });
    document.querySelectorAll("[data-pj-ask-status-url]").forEach(function (root) {
      var url = root.getAttribute("data-pj-ask-status-url");
      follow(root, url, "data-pj-run", "runs", applyQuestion, enableAsking);
    });
    document.querySelectorAll("form[data-pj-ask-form]").forEach(guardAskForm);
    document.querySelectorAll("form[data-pj-upload-form]").forEach(enhanceUploadForm);
    document.querySelectorAll("form:not([data-pj-upload-form]) input[type=file]").forEach(listFiles);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
