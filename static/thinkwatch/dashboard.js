// The live dashboard: one websocket, opened with a one-shot ticket; every message is a
// full snapshot of the numbers, drawn with plain DOM and SVG.
(() => {
  const root = document.getElementById("tw-dashboard");
  if (!root) return;

  const SVG = "http://www.w3.org/2000/svg";
  const status = root.querySelector("[data-status]");
  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const usd = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 4 });
  const formats = {
    requests_per_second: (v) => decimal.format(v),
    error_rate: (v) => percent.format(v),
    tokens_per_second: (v) => decimal.format(v),
    cost_usd: (v) => usd.format(v),
    requests: (v) => integer.format(v),
    p50: (v) => (v === null ? "–" : `${integer.format(v)} ms`),
    p95: (v) => (v === null ? "–" : `${integer.format(v)} ms`),
    mcp_calls: (v) => integer.format(v),
    mcp_errors: (v) => integer.format(v),
  };

  let ticket = root.dataset.ticket;
  let retryDelay = 1000;

  function say(text) {
    status.textContent = text;
  }

  function metrics(snapshot) {
    return { ...snapshot, p50: snapshot.latency_ms.p50, p95: snapshot.latency_ms.p95 };
  }

  function seriesValues(snapshot, name) {
    if (name === "error_rate") {
      return snapshot.series.map((p) => (p.requests ? p.errors / p.requests : 0));
    }
    return snapshot.series.map((p) => p[name]);
  }

  function drawSparkline(svg, values) {
    const [width, height] = [150, 30];
    const top = Math.max(...values, 0) || 1;
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - (v / top) * (height - 2) - 1).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "tw-spark-line");
    svg.replaceChildren(line);
  }

  function bar(fraction) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 8");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "tw-bar");
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("width", String(Math.max(0, Math.min(1, fraction)) * 100));
    rect.setAttribute("height", "8");
    svg.append(rect);
    return svg;
  }

  function drawTop(body, entries, measure) {
    const top = Math.max(...entries.map((e) => e[measure]), 0) || 1;
    const rows = entries.map((entry) => {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = entry.name;
      const value = document.createElement("td");
      value.className = "tw-number";
      value.textContent = formats[measure](entry[measure]);
      const graph = document.createElement("td");
      graph.className = "tw-bar-cell";
      graph.append(bar(entry[measure] / top));
      row.append(name, value, graph);
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 3;
      cell.className = "help";
      cell.textContent = "No requests in this window.";
      row.append(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  function render(snapshot) {
    const values = metrics(snapshot);
    root.querySelectorAll("[data-metric]").forEach((el) => {
      el.textContent = formats[el.dataset.metric](values[el.dataset.metric]);
    });
    root.querySelectorAll("[data-series]").forEach((svg) => {
      drawSparkline(svg, seriesValues(snapshot, svg.dataset.series));
    });
    root.querySelectorAll("[data-top]").forEach((body) => {
      const [group, order] = body.dataset.top.split(".");
      drawTop(body, snapshot[group][order], body.dataset.measure);
    });
    say(`Updated ${new Date(snapshot.at).toLocaleTimeString()}`);
  }

  async function freshTicket() {
    const csrf = root.querySelector("[name=csrfmiddlewaretoken]").value;
    const response = await fetch(root.dataset.ticketUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrf },
      credentials: "same-origin",
    });
    const json = (response.headers.get("Content-Type") || "").startsWith("application/json");
    if (!response.ok || !json) throw new Error("signed out");
    return (await response.json()).ticket;
  }

  function reconnect() {
    say("Reconnecting…");
    setTimeout(async () => {
      try {
        ticket = await freshTicket();
      } catch {
        say("Your session has ended. Reload the page to sign in again.");
        return;
      }
      connect();
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${root.dataset.socketPath}?ticket=${encodeURIComponent(ticket)}`;
    ticket = "";
    const socket = new WebSocket(url);
    socket.addEventListener("message", (event) => {
      retryDelay = 1000;
      render(JSON.parse(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4403) {
        say("You may no longer see this dashboard.");
        return;
      }
      reconnect();
    });
  }

  connect();
})();
