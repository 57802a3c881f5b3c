// htmx swaps 400/409/422 error fragments (see the htmx-config meta tag in base.html); for any
// other error answer, tell the operator instead of failing silently.
(function () {
  function show(message) {
    var box = document.getElementById("htmx-error");
    if (!box) return;
    box.querySelector("[data-message]").textContent = message;
    box.hidden = false;
  }
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var text = xhr.status === 403 ? "Your role does not allow this." : "The dashboard answered " + xhr.status + " " + xhr.statusText + ".";
    show(text);
  });
  document.addEventListener("htmx:sendError", function () {
    show("The dashboard could not be reached. Check your connection and retry.");
  });
  document.addEventListener("click", function (event) {
    if (event.target.matches("#htmx-error .delete")) event.target.parentElement.hidden = true;
  });
})();

// The navigation folds behind the burger button below 1024 px (Bulma's navbar): open and close it.
(function () {
  document.addEventListener("click", function (event) {
    var burger = event.target.closest(".navbar-burger");
    if (!burger) return;
    var menu = document.getElementById(burger.getAttribute("aria-controls"));
    var open = !burger.classList.contains("is-active");
    burger.classList.toggle("is-active", open);
    burger.setAttribute("aria-expanded", open ? "true" : "false");
    if (menu) menu.classList.toggle("is-active", open);
  });
})();
