// A reply's performance, from the usage block of the last streamed chunk, as label/value pairs.

const ms = (value) => `${Math.round(value).toLocaleString()} ms`;

export function metricItems(usage) {
  const perf = usage.performance;
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  const items = [];
  if (perf) {
    items.push(["Time to first token", ms(perf.time_to_first_token_ms)]);
    items.push(["Tokens/s", perf.tokens_per_second.toFixed(1)]);
    items.push(["Prefill", ms(perf.prefill_ms)]);
    items.push(["Decode", ms(perf.decode_ms)]);
  }
  items.push(["Prompt tokens", usage.prompt_tokens.toLocaleString()]);
  items.push(["Cached tokens", cached.toLocaleString()]);
  items.push(["Completion tokens", usage.completion_tokens.toLocaleString()]);
  if (perf?.queue_ms >= 1) items.push(["Queued", ms(perf.queue_ms)]);
  return items;
}
