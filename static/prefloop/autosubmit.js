// A form control marked data-autosubmit submits its form when it changes (the pages allow no inline handlers:
// the Content-Security-Policy runs only the app's own script files).
document.addEventListener("change", (event) => {
  const control = event.target.closest("[data-autosubmit]");
  if (control && control.form) control.form.requestSubmit();
});
