// The dashboard: polls /v1/metrics and /v1/engine/stats every 2 s while it is shown.

import { getJson } from "./api.js";
import { liveChart } from "./charts.js";
import { renderQueue } from "./queue.js";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
const percent = (fraction) => `${(fraction * 100).toFixed(1)}%`;

// Returns setVisible(visible): polling runs only while the dashboard is on screen.
export function initDashboard() {
  let visible = false;
  let timer = null;
  let charts = null; // made on the first poll, once the panel has a width
  let previous = null; // the last engine stats, for tokens/s

  async function poll() {
    timer = null;
    try {
      const [metrics, stats] = await Promise.all([getJson("/v1/metrics"), getJson("/v1/engine/stats")]);
      $("dashboard-error").hidden = true;
      charts ??= makeCharts();
      const tps = previous ? tokensPerSecond(previous, stats) : 0;
      previous = stats;
      showNumbers(stats, tps);
      plot(charts, metrics, stats, tps);
      renderQueue(stats.requests ?? []);
    } catch (e) {
      $("dashboard-error").textContent = `Dashboard: ${e.message}`;
      $("dashboard-error").hidden = false;
    }
    if (visible && timer === null) timer = setTimeout(poll, POLL_MS);
  }

  return (show) => {
    visible = show;
    if (visible && timer === null) poll();
    if (!visible && timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  };
}

function tokensPerSecond(before, now) {
  const seconds = now.timestamp - before.timestamp;
  return seconds > 0 ? Math.max(0, now.num_tokens_computed - before.num_tokens_computed) / seconds : 0;
}

function showNumbers(stats, tps) {
  $("stat-running").textContent = stats.num_requests_running;
  $("stat-waiting").textContent = stats.num_requests_waiting;
  $("stat-kv").textContent = percent(stats.kv_cache_usage);
  $("stat-kv-blocks").textContent = `${stats.kv_cache_free_blocks} of ${stats.kv_cache_blocks} blocks free`;
  const { prefix_cache_hits: hits, prefix_cache_queries: queries } = stats;
  $("stat-prefix").textContent = queries ? percent(hits / queries) : "–";
  $("stat-prefix-tokens").textContent = `${hits.toLocaleString()} of ${queries.toLocaleString()} prompt tokens`;
  $("stat-tps").textContent = tps.toFixed(1);
  $("stat-tokens").textContent = stats.num_tokens_computed.toLocaleString();
}

function makeCharts() {
  return {
    cpu: liveChart($("chart-cpu"), [{ label: "CPU %", color: "#4f9dff" }], { max: 100 }),
    memory: liveChart($("chart-memory"), [{ label: "Used GB", color: "#b48cff" }]),
    gpu: null, // made when the server reports a GPU
    tps: liveChart($("chart-tps"), [{ label: "tokens/s", color: "#3ddc97" }]),
    kv: liveChart($("chart-kv"), [{ label: "KV cache %", color: "#ffb454" }], { max: 100 }),
    requests: liveChart($("chart-requests"), [
      { label: "Running", color: "#4f9dff" },
      { label: "Waiting", color: "#ff6b6b" },
    ]),
  };
}

function plot(charts, metrics, stats, tps) {
  const time = metrics.timestamp;
  charts.cpu.push(time, [metrics.cpu.utilization_percent]);
  charts.memory.push(time, [metrics.memory.used_mb / 1024]);
  charts.tps.push(time, [tps]);
  charts.kv.push(time, [stats.kv_cache_usage * 100]);
  charts.requests.push(time, [stats.num_requests_running, stats.num_requests_waiting]);
  const { gpu } = metrics;
  $("no-gpu").hidden = gpu !== null;
  $("chart-gpu").hidden = gpu === null;
  if (gpu) {
    charts.gpu ??= liveChart(
      $("chart-gpu"),
      [
        { label: "GPU %", color: "#3ddc97" },
        { label: "Memory %", color: "#b48cff" },
      ],
      { max: 100 },
    );
    charts.gpu.push(time, [gpu.utilization_percent, (gpu.memory_used_mb / gpu.memory_total_mb) * 100]);
  }
}
