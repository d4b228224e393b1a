// The live dashboard: polls the JSON API of `taxi-pipeline dashboard` and
// draws the hot spots of the chosen window on a Leaflet map (borough
// outlines, no tiles), the airport chart as SVG and the status strip.
// Colours and scales come from the API, the same as the PNG report's.
"use strict";

(function () {
  const POLL_MS = 2000;
  const NEW_YORK = "America/New_York";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const number = (n) => Number(n).toLocaleString("en-US");
  const clockFormat = new Intl.DateTimeFormat("en-GB", { timeZone: NEW_YORK, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const dateTimeFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: NEW_YORK, weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });

  const state = {
    windows: [],
    chosen: null, // start_ms of the window shown
    follow: true,
    airports: null,
    hotSpotsRequest: 0,
    errors: new Map(),
  };

  // --- errors: shown in the banner, one line per failing source ---------------------------
  function setError(source, error) {
    if (error) state.errors.set(source, error.message || String(error));
    else state.errors.delete(source);
    const banner = $("error");
    banner.hidden = state.errors.size === 0;
    banner.textContent = [...state.errors.values()].join(" | ");
  }

  async function api(path) {
    let response;
    try {
      response = await fetch(path, { cache: "no-store" });
    } catch (e) {
      throw new Error(`the dashboard server does not answer (${e.message}); is taxi-pipeline still running?`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      throw new Error(`${path}: HTTP ${response.status} without a JSON answer`);
    }
    if (!response.ok) throw new Error(body && body.error ? body.error : `${path}: HTTP ${response.status}`);
    return body;
  }

  // --- the map -----------------------------------------------------------------------------
  const map = L.map("map", { zoomSnap: 0.25, zoomDelta: 0.5, minZoom: 9, maxZoom: 16 });
  map.attributionControl.setPrefix(false);
  map.attributionControl.addAttribution("Boroughs: NYC Dept of City Planning; map: Leaflet");
  map.createPane("cells").style.zIndex = 410;
  map.createPane("airports").style.zIndex = 420;
  const cellLayer = L.layerGroup().addTo(map);

  async function loadMapBase() {
    const [areas, boroughs] = await Promise.all([api("/api/areas"), api("/boroughs.geojson")]);
    const city = areas.city;
    map.fitBounds([[city.min_lat, city.min_lon], [city.max_lat, city.max_lon]]);
    L.geoJSON(boroughs, {
      style: { color: "#8a8a8a", weight: 1, fillColor: "#f4f1ea", fillOpacity: 1, className: "borough" },
      onEachFeature: (feature, layer) => layer.bindTooltip(feature.properties.name, { sticky: true }),
    }).addTo(map);
    for (const airport of areas.airports) {
      L.rectangle([[airport.min_lat, airport.min_lon], [airport.max_lat, airport.max_lon]], {
        pane: "airports", color: "#08306b", weight: 2, dashArray: "5 4", fill: false, className: "airport-area",
      }).bindTooltip(`${airport.airport}: dropoffs in this box are ${airport.airport} trips`).addTo(map);
    }
  }

  function drawHotSpots(data) {
    cellLayer.clearLayers();
    const when = `${data.window.new_york} (${data.window.utc})`;
    for (const cell of data.cells) {
      const rectangle = L.rectangle([[cell.south, cell.west], [cell.north, cell.east]], {
        pane: "cells", color: "#67001f", weight: 0.5, opacity: 0.6, fillColor: cell.colour, fillOpacity: 0.88, className: "hot-spot-cell",
      });
      rectangle.bindTooltip(`<b>${cell.geohash}</b><br>${number(cell.pickups)} pickups<br>${when}`, { sticky: true });
      rectangle.addTo(cellLayer);
      const element = rectangle.getElement();
      element.setAttribute("data-geohash", cell.geohash);
      element.setAttribute("data-pickups", String(cell.pickups));
    }
    drawLegend(data);
    document.body.dataset.window = String(data.window.start_ms);
    document.body.dataset.cells = String(data.cells.length);
  }

  function drawLegend(data) {
    const scale = data.scale;
    $("legend").hidden = false;
    $("legend-bar").style.background = `linear-gradient(to right, ${scale.gradient.join(", ")})`;
    const ticks = $("legend-ticks");
    ticks.replaceChildren();
    // Labels closer than this to a neighbour are left out, the largest count always kept.
    const minGap = 26 / Math.max(ticks.clientWidth, 1);
    const kept = [];
    const largest = scale.ticks[scale.ticks.length - 1];
    for (const tick of scale.ticks) {
      const gap = () => tick.position - kept[kept.length - 1].position;
      if (tick === largest) {
        while (kept.length > 1 && gap() < minGap) kept.pop();
        kept.push(tick);
      } else if (!kept.length || gap() >= minGap) {
        kept.push(tick);
      }
    }
    for (const tick of kept) {
      const label = document.createElement("span");
      label.style.left = `${tick.position * 100}%`;
      label.textContent = number(tick.count);
      ticks.appendChild(label);
    }
    $("legend-note").textContent =
      `${scale.log ? "log" : "linear"} scale; ${number(data.window.cells)} cells with at least ${data.min_count} pickups` +
      (data.truncated ? " (cut at the bound)" : "");
  }

  async function loadHotSpots(startMs) {
    const request = ++state.hotSpotsRequest;
    try {
      const data = await api(`/api/hotspots?window=${Math.floor(startMs / 1000)}`);
      if (request !== state.hotSpotsRequest) return; // a later choice won
      drawHotSpots(data);
      setError("hot spots", null);
    } catch (e) {
      if (request !== state.hotSpotsRequest) return;
      cellLayer.clearLayers();
      setError("hot spots", e);
    }
  }

  // --- the window selector -----------------------------------------------------------------
  const slider = $("window-slider");

  function chosenIndex() {
    return state.windows.findIndex((w) => w.start_ms === state.chosen);
  }

  function choose(startMs) {
    const changed = state.chosen !== startMs;
    state.chosen = startMs;
    const index = chosenIndex();
    const shown = state.windows[index];
    slider.value = String(Math.max(index, 0));
    $("window-new-york").textContent = shown ? shown.new_york : "no window closed yet";
    $("window-utc").textContent = shown
      ? `(${shown.utc}), window ${index + 1} of ${state.windows.length}: ${number(shown.pickups)} pickups in ${number(shown.cells)} cells`
      : "";
    $("previous").disabled = index <= 0;
    $("next").disabled = index < 0 || index >= state.windows.length - 1;
    if (changed && shown) loadHotSpots(startMs);
    drawChart();
  }

  function setFollow(follow) {
    state.follow = follow;
    $("follow-live").checked = follow;
    document.body.dataset.follow = String(follow);
    if (follow && state.windows.length) choose(state.windows[state.windows.length - 1].start_ms);
  }

  function chooseByHand(index) {
    if (index < 0 || index >= state.windows.length) return;
    setFollow(false);
    choose(state.windows[index].start_ms);
  }

  slider.addEventListener("input", () => chooseByHand(Number(slider.value)));
  $("previous").addEventListener("click", () => chooseByHand(chosenIndex() - 1));
  $("next").addEventListener("click", () => chooseByHand(chosenIndex() + 1));
  $("follow-live").addEventListener("change", (e) => setFollow(e.target.checked));

  function setWindows(windows) {
    const latest = windows.length ? windows[windows.length - 1].start_ms : null;
    const previousLatest = state.windows.length ? state.windows[state.windows.length - 1].start_ms : null;
    state.windows = windows;
    slider.max = String(Math.max(windows.length - 1, 0));
    slider.disabled = windows.length === 0;
    const known = windows.some((w) => w.start_ms === state.chosen);
    if (latest !== null && (state.chosen === null || !known || (state.follow && latest !== previousLatest))) choose(latest);
    else choose(state.chosen);
  }

  // --- the airport chart -------------------------------------------------------------------
  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    if (parent) parent.appendChild(element);
    return element;
  }

  function niceStep(raw) {
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  }

  function drawChart() {
    const chart = $("chart");
    const data = state.airports;
    chart.replaceChildren();
    if (!data || data.window_ends_ms.length === 0) {
      $("chart-note").textContent = "No trip to JFK or LaGuardia indexed yet.";
      return;
    }
    const width = chart.clientWidth || 500;
    const height = chart.clientHeight || 260;
    // The legend takes a line per airport when the two do not fit side by side.
    const legendRows = width < 600 ? data.series.length : 1;
    const margin = { left: 42, right: 16, top: 26 + 16 * legendRows, bottom: 36 };
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "average trip duration to JFK and LGA per window" }, chart);
    const ends = data.window_ends_ms;
    const shown = state.windows.find((w) => w.start_ms === state.chosen);
    let first = ends[0];
    let last = ends[ends.length - 1];
    if (shown) {
      first = Math.min(first, shown.end_ms);
      last = Math.max(last, shown.end_ms);
    }
    if (first === last) {
      first -= 300000;
      last += 300000;
    }
    const maxMinutes = Math.max(1, ...data.series.flatMap((s) => s.points.map((p) => p.average_minutes)));
    const yStep = niceStep(maxMinutes / 5);
    const yMax = Math.ceil((maxMinutes * 1.08) / yStep) * yStep;
    const x = (t) => margin.left + ((t - first) / (last - first)) * (width - margin.left - margin.right);
    const y = (m) => height - margin.bottom - (m / yMax) * (height - margin.top - margin.bottom);

    for (let m = 0; m <= yMax + 1e-9; m += yStep) {
      svg("line", { x1: margin.left, x2: width - margin.right, y1: y(m), y2: y(m), class: "chart-grid" }, root);
      svg("text", { x: margin.left - 6, y: y(m) + 4, "text-anchor": "end", class: "chart-axis" }, root).textContent = String(Math.round(m));
    }
    svg("text", { x: 4, y: margin.top - 10, class: "chart-axis" }, root).textContent = "minutes";
    const xTicks = Math.max(2, Math.floor((width - margin.left - margin.right) / 80));
    const tickStep = Math.max(600000, Math.ceil((last - first) / xTicks / 600000) * 600000);
    for (let t = Math.ceil(first / tickStep) * tickStep; t <= last; t += tickStep) {
      svg("text", { x: x(t), y: height - margin.bottom + 15, "text-anchor": "middle", class: "chart-axis" }, root).textContent = clockFormat.format(t);
    }
    svg("text", { x: (margin.left + width - margin.right) / 2, y: height - 3, "text-anchor": "middle", class: "chart-axis" }, root).textContent =
      "window end, New York time";

    if (shown) {
      svg("line", { x1: x(shown.end_ms), x2: x(shown.end_ms), y1: margin.top - 4, y2: height - margin.bottom, class: "chosen-window", "data-window-end": shown.end_ms }, root);
    }
    const labelled = ends.length <= 36;
    let legendX = margin.left + 20;
    let legendY = 14;
    for (const series of data.series) {
      const klass = `series-${series.airport}`;
      // A line breaks where a window had no trip to the airport.
      const position = new Map(ends.map((end, i) => [end, i]));
      let run = [];
      const runs = [];
      let previous = -2;
      for (const point of series.points) {
        const i = position.get(point.window_end_ms);
        if (i !== previous + 1 && run.length) {
          runs.push(run);
          run = [];
        }
        run.push(point);
        previous = i;
      }
      if (run.length) runs.push(run);
      for (const r of runs) {
        if (r.length < 2) continue;
        svg("polyline", { points: r.map((p) => `${x(p.window_end_ms)},${y(p.average_minutes)}`).join(" "), class: `chart-line ${klass}` }, root);
      }
      for (const point of series.points) {
        const circle = svg("circle", {
          cx: x(point.window_end_ms), cy: y(point.average_minutes), r: 4, class: `point ${klass}`,
          "data-airport": series.airport, "data-window-end": point.window_end_ms, "data-trips": point.trips,
        }, root);
        svg("title", {}, circle).textContent =
          `${series.airport}, window ending ${dateTimeFormat.format(point.window_end_ms)}: ${point.average_minutes.toFixed(1)} min on average over ${number(point.trips)} trips`;
        circle.addEventListener("click", () => {
          const index = state.windows.findIndex((w) => w.end_ms === point.window_end_ms);
          if (index >= 0) chooseByHand(index);
        });
        if (labelled) {
          svg("text", { x: x(point.window_end_ms), y: y(point.average_minutes) - 7, "text-anchor": "middle", class: `point-label ${klass}` }, root).textContent =
            String(point.trips);
        }
      }
      const legend = svg("text", { x: legendX, y: legendY, class: `chart-legend ${klass}`, stroke: "none" }, root);
      legend.textContent = `● ${series.airport}: ${number(series.trips)} trips, ${series.average_minutes.toFixed(1)} min on average`;
      if (legendRows > 1) legendY += 16;
      else legendX += 260;
    }
    $("chart-note").textContent =
      `Trip-weighted average per window over ${ends.length} windows${data.older_left_out ? " (the latest only)" : ""}; ` +
      (labelled ? "numbers are trips; " : "") + "the dashed line is the window on the map; click a point to show its window.";
  }

  // --- the status strip --------------------------------------------------------------------
  function duration(seconds) {
    const s = Math.abs(seconds);
    const sign = seconds < 0 ? "-" : "";
    if (s < 120) return `${sign}${s} s`;
    if (s < 7200) return `${sign}${Math.round(s / 60)} min`;
    if (s < 2 * 86400) return `${sign}${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${sign}${number(Math.round(s / 86400))} days`;
  }

  function drawStatus(status) {
    $("status-windows").textContent = number(status.windows);
    $("status-last").textContent = status.last_window ? status.last_window.new_york : "none yet";
    $("status-documents").textContent = number(status.documents);
    const progress = status.progress;
    if (progress) {
      $("status-watermark").textContent = progress.watermark
        ? `${dateTimeFormat.format(Date.parse(progress.watermark))} NY, ${duration(progress.watermark_lag_s)} behind the clock`
        : "none yet";
      $("status-dead-letters").textContent = number(progress.dead_letters);
    } else {
      const why = status.progress_error ? "unreadable" : "not known (no --table)";
      $("status-watermark").textContent = why;
      $("status-dead-letters").textContent = why;
    }
    setError("status", status.progress_error ? new Error(status.progress_error) : null);
  }

  // --- polling -----------------------------------------------------------------------------
  async function poll() {
    const tasks = [
      api("/api/windows").then((d) => { setWindows(d.windows); setError("windows", null); }, (e) => setError("windows", e)),
      api("/api/airports").then((d) => { state.airports = d; drawChart(); setError("airports", null); }, (e) => setError("airports", e)),
      api("/api/status").then(drawStatus, (e) => setError("status", e)),
    ];
    await Promise.all(tasks);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    setTimeout(poll, POLL_MS);
  }

  window.addEventListener("resize", () => drawChart());
  setFollow(true);
  loadMapBase().then(() => setError("map", null), (e) => setError("map", e)).then(poll);
})();
