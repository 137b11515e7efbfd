// Keeps a label through a lost connection: when an htmx label POST fails with a network error or 502/503/504, the
// page keeps the choice, says "Connection lost: retrying… (attempt N)" and sends the same request again (same
// parameters, CSRF token and headers) with back-off, until it goes through ("Saved"). Never retries a 4xx or a plain
// 500 (a bug, not an outage: the server answers 503 when the database is down). The server records a label sent
// twice once, so a retry after a lost answer is safe. Other POST forms opt in with a data-retry attribute.
// One outage gets one status line. While a retry is under way (window.prefloopRetrying()) this script's line is
// the page's word on the connection: errors.js adds no line of its own for another request that gets no answer or a
// 502/503/504, and keys.js tells a key pressed meanwhile on this line. Whatever this line says next is newer than a
// line errors.js showed earlier for an outage (marked data-outage), so that line goes; a line carrying the server's
// own message about something else (a 400, a 404) stays, as it says what this one does not. A key refused during a
// retry is said on every later message of it and after "Saved", until the next label is sent: the line changes every
// few seconds, and a person who changed their mind must not think the second key counted.
(function () {
  "use strict";
  var RETRIED = "#label-form, [data-retry]";
  var RETRY_STATUS = [0, 502, 503, 504];
  var FIRST_DELAY_MS = 500, MAX_DELAY_MS = 5000, SAVED_SHOWN_MS = 2000;
  // Said on every later message of the retry, and after it, once a press was refused while it ran: the line changes
  // every few seconds, and a person who changed their mind must not think the second key counted.
  var NOT_TAKEN = "A key pressed meanwhile was not taken: look at the pair shown and press again.";

  var pending = null;   // the request being retried: {verb, path, entries, headers, target, swap, attempt, xhr}
  var issuing = false;  // true while this script itself calls htmx.ajax
  var clearTimer = null;

  // Asked by errors.js and keys.js, which leave the word on the connection to this script's line while it is true.
  window.prefloopRetrying = function () { return pending !== null; };

  function statusBox() {
    var box = document.getElementById("connection-status");
    if (!box) {
      box = document.createElement("p");
      box.id = "connection-status";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      document.body.prepend(box);
    }
    return box;
  }
  function say(text, kind) {
    clearTimeout(clearTimer);
    var box = statusBox();
    box.textContent = text;
    box.className = "notice connection-status connection-" + kind;
    box.hidden = false;
    var stale = document.getElementById("request-status");  // errors.js's line about the same outage
    if (stale && stale.hasAttribute("data-outage")) {
      stale.hidden = true;
      stale.textContent = "";
      stale.removeAttribute("data-outage");
    }
  }
  function clear() { var box = document.getElementById("connection-status"); if (box) box.hidden = true; }

  function retried(elt, verb) {
    return verb !== "get" && elt && elt.closest && elt.closest(RETRIED) !== null;
  }
  function swapOf(elt) {
    var holder = elt.closest("[hx-swap]");
    return holder ? holder.getAttribute("hx-swap") : "innerHTML";
  }
  function targetOf(target) {
    if (target && document.body.contains(target)) return target;
    return target && target.id ? document.getElementById(target.id) : null;
  }
  function retryAfterMs(xhr) {
    var value = xhr && xhr.readyState === 4 ? parseFloat(xhr.getResponseHeader("Retry-After")) : NaN;
    return isNaN(value) ? 0 : value * 1000;
  }

  function schedule(xhr) {
    pending.attempt += 1;
    var backoff = FIRST_DELAY_MS * Math.pow(2, pending.attempt - 1);
    var delay = Math.min(MAX_DELAY_MS, Math.max(backoff, retryAfterMs(xhr)));
    say("Connection lost: retrying… (attempt " + pending.attempt + "). Your choice is kept." +
        (pending.refused ? " " + NOT_TAKEN : ""), "lost");
    pending.xhr = null;
    setTimeout(send, delay);
  }

  function send() {
    var values = new FormData();
    pending.entries.forEach(function (kv) { values.append(kv[0], kv[1]); });
    var target = targetOf(pending.target);
    if (!target) { pending = null; say("The page changed before the label was saved: reload it.", "error"); return; }
    // Issued from <body>, which holds no form: the parameters are exactly those first sent, and keys.js (which
    // stamps the labelling time on requests from the label form) leaves them alone.
    issuing = true;
    try {
      var sent = htmx.ajax(pending.verb, pending.path, {
        source: document.body, target: target, swap: pending.swap, values: values, headers: pending.headers,
      });
      if (sent && sent.catch) sent.catch(function () {});  // failures arrive as htmx events, handled below
    } finally {
      issuing = false;
    }
  }

  function failed(evt, status) {
    var d = evt.detail, config = d.requestConfig;
    if (!config) return;
    var ours = pending !== null && d.xhr === pending.xhr;
    if (!ours && !retried(d.elt, config.verb)) return;
    d.prefloopHandled = true;  // errors.js, which speaks for requests without a handler, leaves this one to us
    if (RETRY_STATUS.indexOf(status) < 0) {
      if (ours) pending = null;
      say("The server did not take this label (HTTP " + status + "): reload the page and label it again.", "error");
      return;
    }
    if (!ours) {
      if (pending !== null) return;  // a retry is under way already
      pending = {
        verb: config.verb, path: config.path,
        entries: Array.from(config.formData.entries()),
        headers: Object.assign({}, config.headers),
        target: d.target, swap: swapOf(d.elt), attempt: 0, xhr: null, refused: false,
      };
    }
    schedule(d.xhr);
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (issuing) { pending.xhr = evt.detail.xhr; return; }
    var config = evt.detail.requestConfig;
    if (pending === null && config && retried(evt.detail.elt, config.verb)) {
      clear();  // the next label is on its way: what the line said of the last one is done with
      return;
    }
    if (pending !== null && config && config.verb !== "get") {
      // One label at a time: a second key press would race the retry for the same pair.
      evt.preventDefault();
      pending.refused = true;
      say("Still sending your last label: retrying… (attempt " + pending.attempt + "). " + NOT_TAKEN, "lost");
    }
  });
  document.addEventListener("htmx:sendError", function (evt) { failed(evt, 0); });
  document.addEventListener("htmx:timeout", function (evt) { failed(evt, 0); });
  document.addEventListener("htmx:responseError", function (evt) { failed(evt, evt.detail.xhr.status); });
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (pending !== null && evt.detail.xhr === pending.xhr && evt.detail.successful) {
      var refused = pending.refused;
      pending = null;
      if (refused) {  // said until the next press: the person must see the key they pressed did not count
        say("Saved. " + NOT_TAKEN, "saved");
        return;
      }
      say("Saved", "saved");
      clearTimer = setTimeout(clear, SAVED_SHOWN_MS);
    }
  });
})();
