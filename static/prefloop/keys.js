// Keyboard shortcuts of the labelling page: 1 left, 2 right, 3 tie, 4 both bad, e strength, c comment,
// d word diff, s skip, u undo, ? keys. htmx does the requests; this script only presses the page's buttons.
// A key pressed while the last label is still being saved is refused, visibly (#press-status), never dropped
// silently: the next pair has not been seen yet, so it must not take a label meant for the last one.
// While retry.js is retrying a label through a lost connection, its line already says the last label is still being
// sent: a press then goes through to retry.js, unmarked, which refuses it on that same line ("Still sending your last
// label"), so that the page does not show a second line about the same label and outage.
(function () {
  "use strict";
  var shownAt = performance.now();
  var SIDES = { "1": "left", "2": "right", "3": "tie", "4": "both_bad" };

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable ||
      (el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type)));
  }
  function busy() { return document.querySelector(".htmx-request") !== null; }
  function retrying() {
    return typeof window.prefloopRetrying === "function" && window.prefloopRetrying();  // retry.js's state
  }
  function refuse(what) {
    var line = document.getElementById("press-status");
    if (!line) return;
    line.textContent = "Not saved: " + what + " was pressed while the last label was still being saved. " +
      "Look at the pair now shown and press again.";
    line.hidden = false;
  }
  function accepted(button) {
    var line = document.getElementById("press-status");
    if (line) { line.hidden = true; line.textContent = ""; }
    document.querySelectorAll("#workspace .pressed").forEach(function (b) { b.classList.remove("pressed"); });
    button.classList.add("pressed");
    var saved = document.getElementById("saved-line");
    if (saved) saved.textContent = "Saving…";
  }
  function press(selector, what) {
    var button = document.querySelector(selector);
    if (!button) return;
    if (retrying()) { button.click(); return; }
    if (busy()) { refuse(what); return; }
    accepted(button);
    button.click();
  }
  function toggleHelp() {
    var help = document.getElementById("help");
    if (help) help.hidden = !help.hidden;
  }
  function toggleDiff() { document.body.classList.toggle("show-diff"); }
  function cycleStrength() {
    var radios = Array.from(document.querySelectorAll("#label-form input[name=strength]"));
    if (!radios.length) return;
    var i = radios.findIndex(function (r) { return r.checked; });
    radios[(i + 1) % radios.length].checked = true;
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e.target)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    var key = e.key;
    if (SIDES[key]) press('#label-form button[name="side"][value="' + SIDES[key] + '"]', "key " + key);
    else if (key === "s") press('#workspace [data-key="s"]', "key s");
    else if (key === "u") press('#workspace [data-key="u"]', "key u");
    else if (key === "?") toggleHelp();
    else if (key === "d") toggleDiff();
    else if (key === "e") cycleStrength();
    else if (key === "c") { var box = document.querySelector("#label-form textarea"); if (box) box.focus(); }
    else if (key === "Escape") { var help = document.getElementById("help"); if (help) help.hidden = true; }
    else return;
    e.preventDefault();
  });

  // A click on a choice, skip or undo: the same feedback and the same refusal as its key.
  document.addEventListener("click", function (e) {
    var button = e.target.closest("#workspace button[type=submit]");
    if (!button || !e.isTrusted || retrying()) return;
    if (busy()) { e.preventDefault(); e.stopPropagation(); refuse("a button"); return; }
    accepted(button);
  }, true);

  document.addEventListener("click", function (e) {
    var target = e.target.closest("[data-action]");
    if (!target) return;
    if (target.dataset.action === "help") toggleHelp();
    if (target.dataset.action === "diff") toggleDiff();
  });

  // Time from showing a pair to its label, sent with the label.
  document.addEventListener("htmx:configRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "label-form") {
      e.detail.parameters.seconds = ((performance.now() - shownAt) / 1000).toFixed(3);
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    // On a phone the buttons sit below the answers: bring the next pair's top back into view.
    var ws = document.getElementById("workspace");
    if (ws && ws.getBoundingClientRect().top < 0) ws.scrollIntoView({ block: "start" });
  });
})();
