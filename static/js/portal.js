/* GPU Grid Portal: live pages. Figures come from the server; the browser only draws and extends them. */
(function () {
  "use strict";

  function liveSocket(path, onMessage) {
    const status = document.getElementById("live-status");
    let delay = 500;
    let lastMessage = 0;
    let socket = null;
    let paused = false;  // the server cannot push (its Redis is down): the page still refreshes on the socket's own ticks
    function setStatus(text, cls) {
      if (status) { status.textContent = text; status.className = "live " + (cls || ""); }
    }
    function connected() {
      if (paused) setStatus("live updates paused: refreshing every few seconds", "stale");
      else setStatus("connected", "ok");
    }
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + path);
      socket.onopen = function () { delay = 500; connected(); };
      socket.onmessage = function (event) {
        lastMessage = Date.now();
        const message = JSON.parse(event.data);
        if (message.type === "live") { paused = !!message.paused; connected(); return; }
        connected();
        onMessage(message);
      };
      socket.onclose = function (event) {
        if (event.code === 4401 || event.code === 4403) { setStatus("not allowed", "bad"); return; }
        paused = false;  // a new connection says again whether pushes are paused
        setStatus("live updates paused: reconnecting…", "bad");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    setInterval(function () {
      if (lastMessage && Date.now() - lastMessage > 6000) setStatus("stale: no update for " + Math.round((Date.now() - lastMessage) / 1000) + " s", "stale");
    }, 1000);
    connect();
    return {
      send: function (message) { if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message)); }
    };
  }

  // Telemetry older than this is called stale on the page (the cycle runs every 1-5 s).
  const TELEMETRY_STALE_MS = 10000;

  function staleWatch(id) {
    const state = { last: 0, why: "" };
    function show() {
      const el = document.getElementById(id);
      if (!el) return;
      const age = state.last ? Date.now() - state.last : 0;
      let label = "";
      if (state.why) label = "telemetry stale: " + state.why;
      else if (state.last && age > TELEMETRY_STALE_MS) label = "telemetry stale: no data for " + Math.round(age / 1000) + " s";
      el.textContent = label;
      el.dataset.stale = label ? "true" : "false";
    }
    setInterval(show, 1000);
    return {
      fresh: function () { state.last = Date.now(); state.why = ""; show(); },
      stale: function (why) { state.why = why || "no recent data"; show(); }
    };
  }

  function heatmap(figures, initial) {
    let metric = "temp";
    let heat = initial && initial.heat ? initial.heat : null;
    function redraw() {
      const base = figures[metric];
      if (!base) return;
      const trace = Object.assign({}, base.data[0]);
      if (heat) {
        trace.z = heat[metric] || [];
        trace.y = heat.nodes || [];
        trace.x = Array.from({ length: heat.gpus || 0 }, function (_, g) { return "gpu" + g; });
      }
      const layout = Object.assign({}, base.layout, { height: Math.max(200, 60 + 22 * (trace.y || []).length) });
      const el = document.getElementById("chart-heatmap");
      if (el && window.Plotly) Plotly.react(el, [trace], layout, { displayModeBar: false, responsive: true });
    }
    document.querySelectorAll('input[name="heat-metric"]').forEach(function (input) {
      input.addEventListener("change", function () { if (input.checked) { metric = input.value; redraw(); } });
    });
    redraw();
    return { update: function (next) { heat = next; redraw(); }, setFigures: function (next) { figures = next; redraw(); } };
  }

  function draw(id, figure) {
    const el = document.getElementById(id);
    if (el && window.Plotly) Plotly.react(el, figure.data, figure.layout, { displayModeBar: false, responsive: true });
  }

  function extend(id, t, values, maxPoints) {
    const el = document.getElementById(id);
    if (!el || !el.data || !window.Plotly) return;
    const names = el.data.map(function (trace) { return trace.name; });
    const xs = [], ys = [], indices = [];
    Object.keys(values).forEach(function (label) {
      let i = names.indexOf(label);
      if (i < 0) {
        Plotly.addTraces(el, { x: [], y: [], name: label, mode: "lines", type: "scatter", line: { width: 1.5 } });
        i = el.data.length - 1;
        names.push(label);
      }
      indices.push(i); xs.push([t]); ys.push([values[label]]);
    });
    if (indices.length) Plotly.extendTraces(el, { x: xs, y: ys }, indices, maxPoints);
  }

  function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }

  function nodeState(row, n, canOverride, socket) {
    row.cells[3].innerHTML = '<span class="state state-' + n.state + '">' + n.state + '</span> <span class="muted"></span>';
    row.cells[3].querySelector(".muted").textContent = n.reason;
    if (canOverride && n.guarded) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.textContent = "Override";
      button.addEventListener("click", function () {
        const reason = window.prompt("Why take " + n.name + " back from the thermal guard?");
        if (reason) socket.send({ type: "override", node: n.name, reason: reason });
      });
      row.cells[3].appendChild(document.createTextNode(" "));
      row.cells[3].appendChild(button);
    }
  }

  function safeguardLog(events) {
    const list = document.getElementById("safeguard-log");
    if (!list || !events) return;
    list.innerHTML = "";
    if (!events.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "Nothing yet."; list.appendChild(li); }
    events.forEach(function (e) {
      const li = document.createElement("li");
      li.innerHTML = "<time></time> <span></span> <span class=\"muted\"></span>";
      li.querySelector("time").textContent = e.at.slice(0, 19);
      li.querySelector("span").textContent = e.node + ": " + e.kind;
      li.querySelector(".muted").textContent = e.reason + " (" + e.actor + ")";
      list.appendChild(li);
    });
  }

  function dashboard() {
    const charts = JSON.parse(document.getElementById("grid-charts").textContent);
    draw("chart-utilization", charts.utilization);
    draw("chart-queue", charts.queue);
    const heat = heatmap(charts.heatmap || {}, charts.heat);
    const stale = staleWatch("heat-stale");
    if (charts.heat && charts.heat.stale) stale.stale(charts.heat.why); else stale.fresh();
    let socket = null;
    socket = liveSocket("/ws/grid/", function (msg) {
      if (msg.type === "telemetry.grid") {
        if (msg.stale) { stale.stale(msg.why); return; }
        stale.fresh();
        heat.update(msg.heat);
        return;
      }
      if (msg.type === "history") {
        draw("chart-utilization", msg.charts.utilization);
        draw("chart-queue", msg.charts.queue);
        heat.setFigures(msg.charts.heatmap);
        if (msg.charts.heat && !msg.charts.heat.stale) heat.update(msg.charts.heat.heat);
        return;
      }
      if (msg.type === "override.result") {
        if (!msg.ok) window.alert("Override refused: " + msg.error);
        return;
      }
      if (msg.type !== "grid") return;
      safeguardLog(msg.safeguards);
      const util = {}, queue = {};
      msg.pools.forEach(function (p) {
        util[p.name] = p.utilization;
        const tile = document.querySelector('[data-pool="' + p.name + '"]');
        if (tile) {
          tile.querySelector(".alloc").textContent = p.gpus_allocated;
          tile.querySelector(".total").textContent = p.gpus_total;
          tile.querySelector(".nodes").textContent = p.nodes;
          tile.querySelector(".running").textContent = p.jobs_running;
          tile.querySelector(".bar div").style.width = p.utilization + "%";
        }
      });
      text("queue-jobs", msg.queue.jobs);
      text("queue-gpus", msg.queue.gpus);
      text("running-jobs", msg.queue.running);
      msg.nodes.forEach(function (n) {
        const row = document.querySelector('[data-node="' + n.name + '"]');
        if (row) row.cells[2].textContent = n.gpus_used + " / " + n.gpus;
        if (row) nodeState(row, n, msg.can_override, socket);
      });
      extend("chart-utilization", msg.at, util, 720);
      extend("chart-queue", msg.at, msg.queue.by_model, 720);
    });
  }

  function job(jobId) {
    const charts = JSON.parse(document.getElementById("job-charts").textContent);
    Object.keys(charts).forEach(function (metric) { draw("chart-" + metric, charts[metric]); });
    const log = document.getElementById("log");
    const timeline = document.getElementById("timeline");

    function showState(job) {
      const el = document.getElementById("job-state");
      el.textContent = job.state_label;
      el.className = "state state-" + job.state;
      let why = job.reason_detail ? job.reason_label + ": " + job.reason_detail : "";
      if (job.position) why += (why ? " · " : "") + "#" + job.position + " in the team's line, #" + job.pool_position + " among waiting jobs of its GPU model";
      if (job.estimated_start_range) {
        const hm = function (iso) { return iso.slice(0, 16).replace("T", " "); };
        why += " · likely to start between " + hm(job.estimated_start_range[0]) + " and " + hm(job.estimated_start_range[1]) + " UTC";
      }
      text("job-reason", why);
      text("job-nodes", job.nodes.length ? job.nodes.join(", ") : "—");
      if (job.exit_code !== null) text("job-exit", "Exit code " + job.exit_code);
      if (job.ended) { const f = document.getElementById("cancel-form"); if (f) f.remove(); }
    }
    function addEvents(events) {
      events.forEach(function (e) {
        if (timeline.querySelector('[data-event="' + e.id + '"]')) return;
        const li = document.createElement("li");
        li.dataset.event = e.id;
        li.innerHTML = '<time></time> <span class="state"></span> <span class="muted"></span>';
        li.querySelector("time").textContent = e.at.slice(0, 19);
        li.querySelector(".state").textContent = e.to;
        li.querySelector(".state").className = "state state-" + e.to;
        li.querySelector(".muted").textContent = e.reason + " (" + e.actor + ")";
        timeline.appendChild(li);
      });
    }
    // The log follows new lines while "follow" is ticked; scrolling up unticks it, scrolling to the end ticks it again.
    const follow = document.getElementById("log-follow");
    function keepAtEnd() { if (!follow || follow.checked) log.scrollTop = log.scrollHeight; }
    log.addEventListener("scroll", function () {
      if (follow) follow.checked = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    });
    if (follow) follow.addEventListener("change", keepAtEnd);
    keepAtEnd();
    function appendLog(lines) {
      if (!lines.length) return;
      log.textContent += lines.join("\n") + "\n";
      keepAtEnd();
    }
    const stale = staleWatch("gpu-stale");
    let lastGpuT = "";
    function gpus(sample) {
      if (!sample) return;
      if (sample.stale) { stale.stale(sample.why); return; }
      if (sample.t <= lastGpuT) return;  // pushed and polled samples never draw a point twice
      lastGpuT = sample.t;
      stale.fresh();
      Object.keys(sample.values).forEach(function (metric) { extend("chart-" + metric, sample.t, sample.values[metric], 300); });
    }
    function showEfficiency(e) {
      if (!e) return;
      text("eff-title", e.final ? "final" : "so far");
      text("eff-mean", e.mean_utilization === null ? "—" : e.mean_utilization);
      text("eff-mem", e.memory_peak_mib === null ? "—" : e.memory_peak_mib);
      text("eff-idle", e.idle_fraction === null ? "—" : Math.round(e.idle_fraction * 100));
      const decision = document.getElementById("idle-decision");
      if (decision) decision.textContent = e.idle_decision ? "Idle policy: " + e.idle_decision : (e.warned_at ? "Idle policy: warned " + e.warned_at.slice(0, 19) : "");
    }
    function showSafeguards(events) {
      const list = document.getElementById("safeguards");
      if (!list || !events) return;
      list.innerHTML = "";
      if (!events.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "Nothing yet."; list.appendChild(li); }
      events.forEach(function (e) {
        const li = document.createElement("li");
        li.textContent = e.at.slice(0, 19) + " " + e.kind + ": " + e.reason + " (" + e.actor + ")";
        list.appendChild(li);
      });
    }
    liveSocket("/ws/jobs/" + jobId + "/", function (msg) {
      if (msg.type === "gpus") { gpus(msg); return; }
      if (msg.type === "snapshot" || msg.type === "tick") { showEfficiency(msg.efficiency); showSafeguards(msg.safeguards); }
      if (msg.type === "snapshot") {
        lastGpuT = "";
        if (msg.stale) stale.stale("no recent data");
        showState(msg.job);
        timeline.innerHTML = "";
        addEvents(msg.events);
        log.textContent = msg.log.lines.length ? msg.log.lines.join("\n") + "\n" : "";
        keepAtEnd();
        Object.keys(msg.charts).forEach(function (metric) { draw("chart-" + metric, msg.charts[metric]); });
      } else if (msg.type === "tick") {
        showState(msg.job);
        addEvents(msg.events);
        appendLog(msg.log.lines);
        gpus(msg.gpus);
      }
    });
  }

  function charts(dataId) {
    const figures = JSON.parse(document.getElementById(dataId).textContent);
    Object.keys(figures).forEach(function (name) { draw("chart-" + name, figures[name]); });
  }

  function progress(cardId) {
    const card = document.getElementById(cardId);
    const timer = setInterval(function () {
      fetch(card.dataset.statusUrl, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
        document.getElementById("progress-bar").style.width = Math.round(s.progress * 100) + "%";
        text("progress-text", s.state + " · " + Math.round(s.progress * 100) + "%");
        text("progress-jobs", s.jobs);
        if (s.state === "done" || s.state === "failed") { clearInterval(timer); location.reload(); }
      });
    }, 1000);
  }

  // Inline event handlers are blocked by the Content Security Policy; markup opts in with data attributes.
  document.addEventListener("change", function (event) {
    const target = event.target;
    if (target && target.matches && target.matches("[data-submit-on-change]") && target.form) target.form.submit();
  });
  // A form with data-confirm asks first (cancelling a job, revoking every token).
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  window.GridPortal = { dashboard: dashboard, job: job, charts: charts, progress: progress };
})();
