// PoseHub budget notifications for JupyterLab 4.
//
// A hand-written module-federation container (the interface JupyterLab's
// loader expects of a prebuilt extension: _JUPYTERLAB[name].init/get), so no
// build step is needed. It uses no JupyterLab packages: it only runs the
// "apputils:notify" command. Every minute it asks the cost service
// (/services/cost/api/status, signed in through the hub's OAuth like any page)
// and shows a notification when the user passes a warning level (80 %, 95 %)
// or their servers are stopped at 100 %. Every 30 seconds it asks its own
// server how long it has been idle (<base_url>api/posehub/idle, which does
// not count as activity) and warns before the idle culler stops it.
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

  var IDLE_INTERVAL_MS = 30 * 1000;

  function pageConfig() {
    try {
      return JSON.parse(document.getElementById("jupyter-config-data").textContent);
    } catch (e) { return {}; }
  }

  function idleUrl() {
    var base = pageConfig().baseUrl || "/";
    return base.replace(/\/?$/, "/") + "api/posehub/idle";
  }

  function xsrf() {
    var m = document.cookie.match("\\b_xsrf=([^;]*)\\b");
    return m ? decodeURIComponent(m[1]) : "";
  }

  function minutes(seconds) {
    var m = Math.max(1, Math.round(seconds / 60));
    return m + (m === 1 ? " minute" : " minutes");
  }

  function watchIdle(app) {
    var url = idleUrl();
    var warned = false;
    function check() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json", "X-XSRFToken": xsrf() } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s || !s.culling) { return; }
          document.body.dataset.posehubIdleStopsIn = String(s.stops_in_seconds);
          if (!s.warn) { warned = false; return; }
          if (warned) { return; }
          warned = true;
          return app.commands.execute("apputils:notify", {
            message: "This server has been idle for " + minutes(s.idle_seconds) + ". It will be stopped in about " +
              minutes(s.stops_in_seconds) + " unless you use it (run a cell, open or save a file). " +
              "Your files stay; save open notebooks now.",
            type: "warning",
            options: { autoClose: false }
          });
        })
        .catch(function (e) { console.warn("PoseHub idle status unavailable:", e); });
    }
    setTimeout(check, 3000);
    setInterval(check, IDLE_INTERVAL_MS);
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
      watchIdle(app);
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
