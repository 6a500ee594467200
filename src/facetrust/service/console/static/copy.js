// Copy buttons: <button type="button" data-copy="ELEMENT_ID" hidden> copies that
// element's text. Served from the console itself (Content-Security-Policy
// script-src 'self'); without JavaScript the button stays hidden and the text
// can still be selected and copied by hand.
"use strict";
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Copy failed: select the key and copy it by hand";
    });
  });
});
