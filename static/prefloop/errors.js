// Every htmx request that fails says so. A refused or failed request (a vote, a Cancel, a poll) puts the server's
// own message (plain text, a JSON "detail", or the first paragraph of an error page: always as text, never as HTML)
// in the page's status line (#request-status); one the server cannot be reached for says that. Requests with their
// own handling are left to it: label POSTs and [data-retry] forms (retry.js marks those it handles). A job's poll
// that gets 404 (the job was deleted) stops and leaves a line saying so, instead of asking again every second.
// (A request sent signed out is answered 401 with HX-Redirect to the sign-in page: htmx follows it; see
// prefloop/htmx.py.)
// One outage gets one status line: two lines for it read as two problems. While retry.js is retrying a label
// (window.prefloopRetrying(); its #connection-status line says so), a request that gets no answer or a 502/503/504
// (what retry.js takes for an outage) adds no line here, as that line already says the server cannot be reached.
// An outage line shown here earlier is marked data-outage, and retry.js takes it away when it says something newer;
// an outage line shown here takes away retry.js's "Saved", which it makes out of date. A line with the server's own
// message about something else (a refused vote, a 404) stays beside the retry's line: it says something new.
(function () {
  "use strict";
  var MAX_CHARS = 400;
  var OUTAGE_STATUS = [502, 503, 504];  // answered by a proxy or by the server with its database away: an outage
  var GONE = "This job no longer exists (it was deleted): its progress is no longer updated. Reload the page for " +
    "the current list.";
  var failedElt = null;  // the element whose request the status line speaks of

  function statusLine() {
    var box = document.getElementById("request-status");
    if (!box) {
      box = document.createElement("p");
      box.id = "request-status";
      box.setAttribute("role", "alert");
      document.body.prepend(box);
    }
    return box;
  }
  function say(text, elt, outage) {
    var box = statusLine();
    box.textContent = text;
    box.className = "notice connection-status connection-error request-status";
    box.hidden = false;
    failedElt = elt;
    if (!outage) { box.removeAttribute("data-outage"); return; }
    box.setAttribute("data-outage", "");
    var retryLine = document.getElementById("connection-status");
    if (retryLine && retryLine.classList.contains("connection-saved")) retryLine.hidden = true;
  }
  function clear() {
    var box = document.getElementById("request-status");
    if (box) { box.hidden = true; box.textContent = ""; box.removeAttribute("data-outage"); }
    failedElt = null;
  }
  // Whether retry.js is retrying a label, and so already saying that the server cannot be reached.
  function retrying() {
    return typeof window.prefloopRetrying === "function" && window.prefloopRetrying();
  }

  function detailOf(data) {
    if (!data || typeof data !== "object") return "";
    var detail = data.detail !== undefined ? data.detail : data.message !== undefined ? data.message : data.error;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map(function (d) { return typeof d === "string" ? d : (d && d.msg) || ""; }).join("; ");
    }
    return "";
  }
  // The server's message, as text.
  function serverMessage(xhr) {
    var type = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
    var body = typeof xhr.responseText === "string" ? xhr.responseText : "";
    var text = "";
    if (!body) return "";
    if (type.indexOf("json") >= 0) {
      try { text = detailOf(JSON.parse(body)); } catch (e) { text = ""; }
    } else if (type.indexOf("text/plain") === 0) {
      text = body;
    } else if (type.indexOf("text/html") === 0) {
      // An error page (403, 404): parsed into an inert document (no script runs, nothing loads), its text taken.
      var doc = new DOMParser().parseFromString(body, "text/html");
      var first = doc.querySelector("main p") || doc.querySelector("p");
      text = first ? first.textContent : "";
    }
    text = text.replace(/\s+/g, " ").trim();
    return text.length > MAX_CHARS ? text.slice(0, MAX_CHARS - 1) + "…" : text;
  }

  function polls(elt) {
    return !!(elt && elt.getAttribute && /\bevery\b/.test(elt.getAttribute("hx-trigger") || ""));
  }
  // Replaces a polling element by a copy that does not poll (htmx polls only the element it set up), keeping what
  // it showed, without its Cancel buttons, and with the line saying the job is gone. A table row becomes one cell.
  function stopWatching(elt) {
    var line, copy;
    if (elt.tagName === "TR") {
      copy = document.createElement("tr");
      line = document.createElement("td");
      line.colSpan = Array.prototype.reduce.call(elt.cells, function (n, c) { return n + c.colSpan; }, 0) || 1;
      copy.appendChild(line);
    } else {
      copy = elt.cloneNode(false);
      while (elt.firstChild) copy.appendChild(elt.firstChild);
      copy.querySelectorAll("button.cancel").forEach(function (b) { b.remove(); });
      line = document.createElement("p");
      copy.prepend(line);
    }
    copy.id = elt.id;
    copy.className = elt.className;
    Array.prototype.slice.call(copy.attributes).forEach(function (a) {
      if (/^(data-)?hx-/.test(a.name)) copy.removeAttribute(a.name);
    });
    copy.classList.remove("htmx-request", "htmx-settling", "htmx-swapping", "htmx-added");
    copy.classList.add("job-gone");
    line.className = "notice job-gone-line";
    line.setAttribute("role", "status");
    line.textContent = GONE;
    elt.replaceWith(copy);
  }

  function ownHandler(evt) {
    return evt.detail.prefloopHandled === true;  // retry.js took it
  }
  function verbOf(evt) {
    var config = evt.detail.requestConfig;
    return config && config.verb ? config.verb : "get";
  }

  document.addEventListener("htmx:responseError", function (evt) {
    if (ownHandler(evt)) return;
    var xhr = evt.detail.xhr, elt = evt.detail.elt, status = xhr.status;
    if (status === 404 && polls(elt) && verbOf(evt) === "get") { stopWatching(elt); return; }
    var outage = OUTAGE_STATUS.indexOf(status) >= 0;
    if (outage && retrying()) return;
    var text = serverMessage(xhr);
    if (!text) {
      if (status === 404) text = "Not found: it may have been deleted. Reload the page.";
      else if (verbOf(evt) === "get") text = "This part of the page could not be updated: reload the page.";
      else text = "The server did not take this: it may not have been saved. Reload the page and try again.";
    }
    say(text + " (HTTP " + status + ")", elt, outage);
  });
  document.addEventListener("htmx:sendError", function (evt) {
    if (ownHandler(evt) || retrying()) return;
    say(verbOf(evt) === "get"
      ? "Could not reach the server: this page is not being updated. Check the connection."
      : "Could not reach the server: this was not saved. Check the connection and try again.", evt.detail.elt, true);
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (failedElt === null || !evt.detail.successful) return;
    // The failed request went through after all, or the person did something else that did.
    if (evt.detail.elt === failedElt || verbOf(evt) !== "get") clear();
  });
})();
