// Requests to the server: the API key, readable errors, and streamed chat completions.

import { apiKey, askForApiKey } from "./apikey.js";
import { sseEvents } from "./sse.js";

export class ApiError extends Error {}

// fetch() with the API key; on 401 asks for a key and tries again. Non-2xx answers throw an ApiError
// carrying the server's own message.
export async function apiFetch(path, options = {}) {
  for (;;) {
    const headers = { ...options.headers };
    if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(`Could not reach the server (${e.message}).`);
    }
    if (response.status === 401) {
      const message = await errorMessage(response);
      const reason = apiKey() ? `The server refused this key: ${message}.` : "This server asks for an API key.";
      if (await askForApiKey(reason)) continue;
      throw new ApiError(`The server needs an API key (reload the page to enter one): ${message}`);
    }
    if (!response.ok) throw new ApiError(await errorMessage(response));
    return response;
  }
}

export async function getJson(path, options) {
  return (await apiFetch(path, options)).json();
}

// POSTs a streamed chat completion; calls onDelta(text) per token and returns the usage block.
export async function streamChat(body, signal, onDelta) {
  const response = await apiFetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  let usage = null;
  let finishReason = null;
  for await (const event of sseEvents(response)) {
    if (event.error) throw new ApiError(event.error.message || "The server reported an error.");
    if (event.usage) usage = event.usage;
    for (const choice of event.choices || []) {
      if (choice.delta?.content) onDelta(choice.delta.content);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return { usage, finishReason };
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const message = body.error?.message ?? body.detail ?? text;
    return `${message} (HTTP ${response.status})`;
  } catch {
    return `HTTP ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`;
  }
}
