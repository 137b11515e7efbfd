// Keyboard shortcuts of the compare page: a key clicks the visible element marked data-key="<key>".
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  if (event.key === "Enter" && /^(BUTTON|A)$/.test(target.tagName)) return;
  let key = event.key.toLowerCase();
  if (key === "enter") key = "n";
  const element = document.querySelector('[data-key="' + CSS.escape(key) + '"]');
  if (element && !element.disabled) {
    event.preventDefault();
    element.click();
  }
});
