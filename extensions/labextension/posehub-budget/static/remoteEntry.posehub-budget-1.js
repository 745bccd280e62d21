// PoseHub budget notifications for JupyterLab 4.
//
// A hand-written module-federation container (the interface JupyterLab's
// loader expects of a prebuilt extension: _JUPYTERLAB[name].init/get), so no
// build step is needed. It uses no JupyterLab packages: it only runs the
// "apputils:notify" command. Every minute it asks the cost service
// (/services/cost/api/status, signed in through the hub's OAuth like any page)
// and shows a notification when the user passes a warning level (80 %, 95 %)
// or their servers are stopped at 100 %.
var _JUPYTERLAB;
(function () {
  "use strict";
  var INTERVAL_MS = 60 * 1000;

  function statusUrl() {
    var hubPrefix = "/hub/";
    try {
      var cfg = JSON.parse(document.getElementById("jupyter-config-data").textContent);
      hubPrefix = cfg.hubPrefix || hubPrefix;
    } catch (e) { /* not under a hub: keep the default */ }
    return hubPrefix.replace(/hub\/?$/, "") + "services/cost/api/status";
  }

  var plugin = {
    id: "posehub-budget:plugin",
    description: "Shows PoseHub budget warnings as notifications.",
    autoStart: true,
    activate: function (app) {
      var url = statusUrl();
      var shown = "";
      function check() {
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (s) {
            if (!s || !s.level || s.level === shown) { return; }
            shown = s.level;
            document.body.dataset.posehubBudgetLevel = s.level;
            return app.commands.execute("apputils:notify", {
              message: s.message,
              type: s.stopped ? "error" : "warning",
              options: { autoClose: false }
            });
          })
          .catch(function (e) { console.warn("PoseHub budget status unavailable:", e); });
      }
      setTimeout(check, 2000);
      setInterval(check, INTERVAL_MS);
    }
  };

  _JUPYTERLAB = _JUPYTERLAB || {};
  _JUPYTERLAB["posehub-budget"] = {
    init: function () { return Promise.resolve(); },
    get: function (module) {
      if (module !== "./extension" && module !== "./index") {
        return Promise.reject(new Error("Module " + module + " does not exist in container."));
      }
      return Promise.resolve(function () { return { __esModule: true, default: plugin }; });
    }
  };
})();
