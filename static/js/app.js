/* Tunix RT pages: draws uPlot charts from JSON specs rendered by the server (json_script), on first
   load and after every htmx swap. A spec: {kind: "lines"|"scatter", x: [...], series: [{label,
   values, points?, step?, width?}], xLabel, yLabel, xLog?, xLabels?}. */
(function () {
  "use strict";
  var PALETTE = ["#3b5bdb", "#2b8a3e", "#e8590c", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c940d", "#364fc7", "#862e9c", "#0b7285", "#e67700"];
  var charts = [];

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function optionsFor(spec, width) {
    var scatter = spec.kind === "scatter";
    var xLabels = spec.xLabels || null;
    var series = [{ label: spec.xLabel || "x", value: function (u, v, si, i) {
      if (v == null) return "—";
      if (xLabels) return xLabels[v] != null ? xLabels[v] : v;
      if (spec.tooltips && i != null && spec.tooltips[i]) return spec.tooltips[i];
      return +v.toPrecision(4);
    } }];
    spec.series.forEach(function (s, i) {
      var c = s.color || color(i);
      var pointsOnly = scatter || s.points;
      series.push({
        label: s.label,
        stroke: c,
        width: pointsOnly ? 0 : (s.width || 1.5),
        spanGaps: true,
        paths: pointsOnly ? function () { return null; } : (s.step ? uPlot.paths.stepped({ align: 1 }) : undefined),
        points: pointsOnly ? { show: true, size: 6, stroke: c, fill: c + "99", width: 1 } : { show: false },
        value: function (u, v) { return v == null ? "—" : +v.toPrecision(4); },
      });
    });
    var xScale = { time: false };
    if (spec.xLog) { xScale.distr = 3; xScale.log = 10; }
    if (xLabels) { xScale.range = [-0.5, xLabels.length - 0.5]; }
    var xAxis = { label: spec.xLabel || "", labelSize: 18, size: 40, stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e3e6eb" } };
    if (xLabels) {
      xAxis.splits = function () { return xLabels.map(function (_, i) { return i; }); };
      xAxis.values = function (u, splits) { return splits.map(function (i) { return xLabels[i] != null ? xLabels[i] : ""; }); };
    } else if (spec.xLog) {
      // One tick per power of ten: the default minor ticks crowd a small chart.
      xAxis.splits = function (u, axisIdx, min, max) {
        var out = [];
        for (var e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
          var v = Math.pow(10, e);
          if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
        }
        return out.length ? out : [min, max];
      };
      xAxis.values = function (u, splits) { return splits.map(function (v) { return v == null ? "" : (+v.toPrecision(2)).toString(); }); };
    } else if (spec.xInteger) {
      xAxis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
    }
    return {
      width: width,
      height: scatter ? 220 : 260,
      series: series,
      scales: { x: xScale },
      axes: [xAxis, { label: spec.yLabel || "", labelSize: 18, size: 56, stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e3e6eb" } }],
      legend: { show: spec.series.length <= 8 || !scatter },
      cursor: { points: { size: 7 } },
    };
  }

  function specFor(el) {
    var source = document.getElementById(el.dataset.source || "job-charts-data");
    if (!source) return null;
    var data = JSON.parse(source.textContent || "null");
    if (!data) return null;
    var spec = data[el.dataset.chart];
    if (spec && el.dataset.index != null) spec = spec[+el.dataset.index];
    return spec || null;
  }

  function draw(el) {
    var spec = specFor(el);
    el.textContent = "";
    if (!spec || !spec.x || spec.x.length === 0 || !spec.series || spec.series.length === 0) {
      var empty = document.createElement("div");
      empty.className = "chart-empty";
      empty.textContent = el.dataset.empty || "No data yet: this chart fills in as trials report.";
      el.appendChild(empty);
      return;
    }
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var width = Math.max(240, el.clientWidth || el.parentElement.clientWidth || 480);
    charts.push({ el: el, plot: new uPlot(optionsFor(spec, width), data, el) });
  }

  function prune() {
    charts = charts.filter(function (c) {
      if (c.el.isConnected) return true;
      c.plot.destroy();
      return false;
    });
  }

  function drawIn(root) {
    if (typeof uPlot === "undefined") return;
    prune();
    var scope = root && root.querySelectorAll ? root : document;
    var els = scope.querySelectorAll("[data-chart]");
    if (scope.matches && scope.matches("[data-chart]")) els = [scope];
    Array.prototype.forEach.call(els, draw);
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      prune();
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(240, c.el.clientWidth), height: c.plot.height }); });
    }, 150);
  });

  // A poll that lands on the sign-in page (the session ended): show that page, not a fragment of it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.responseURL && xhr.responseURL.indexOf("/accounts/login/") !== -1) {
      event.detail.shouldSwap = false;
      var login = xhr.responseURL.split("?")[0];
      window.location.href = login + "?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    }
  });

  if (window.htmx) {
    htmx.onLoad(drawIn);
  } else {
    document.addEventListener("DOMContentLoaded", function () { drawIn(document); });
  }
})();
