// A small live line chart on uPlot: time on x, the last few minutes of points, dark colours.
/* global uPlot */

const HISTORY = 150; // points: five minutes at one every 2 s
const HEIGHT = 170;
const AXIS = { stroke: "#9aa4b2", grid: { stroke: "#262c38" }, ticks: { stroke: "#262c38" } };

// series: [{ label, color }]; max: a fixed top of the y scale (100 for percentages), else it follows the data.
export function liveChart(element, series, { max = null } = {}) {
  const data = [[], ...series.map(() => [])];
  const options = {
    width: element.clientWidth,
    height: HEIGHT,
    series: [{}, ...series.map(({ label, color }) => ({ label, stroke: color, fill: `${color}22`, width: 2 }))],
    axes: [AXIS, AXIS],
    scales: { y: { range: (_plot, _min, top) => [0, max ?? Math.max(1, top * 1.15)] } },
    cursor: { drag: { x: false, y: false } },
    legend: { live: false },
  };
  const plot = new uPlot(options, data, element);
  new ResizeObserver(() => plot.setSize({ width: element.clientWidth, height: HEIGHT })).observe(element);
  return {
    push(time, values) {
      data[0].push(time);
      values.forEach((value, i) => data[i + 1].push(value));
      if (data[0].length > HISTORY) for (const column of data) column.shift();
      plot.setData(data);
    },
  };
}
