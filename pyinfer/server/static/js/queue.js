// The live request queue: one row per sequence in the engine, with its state and tokens so far.

export function renderQueue(requests) {
  const rows = requests.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.state = r.state;
    const cells = [
      r.request_id,
      r.index,
      r.state,
      r.prompt_tokens,
      r.computed_tokens,
      r.cached_tokens,
      r.output_tokens,
      `${(r.age_ms / 1000).toFixed(1)} s`,
    ];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    tr.cells[0].title = r.request_id;
    tr.cells[2].className = `state ${r.state}`;
    return tr;
  });
  document.getElementById("queue-body").replaceChildren(...rows);
  document.getElementById("queue-empty").hidden = rows.length > 0;
}
