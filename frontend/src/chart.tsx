// A uPlot line chart that follows its container's width and takes new data
// without being rebuilt. While the pointer is not over it, its legend shows
// the newest point (its real time and values) instead of uPlot's "--".

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface SeriesSpec {
  label: string;
  color: string;
  dash?: number[];
}

const PALETTE = ['#4f7cff', '#e5484d', '#30a46c', '#f5a524', '#8e4ec6', '#12a594'];
export const color = (i: number) => PALETTE[i % PALETTE.length];

function axisColor(): string {
  return matchMedia('(prefers-color-scheme: dark)').matches ? '#9aa4b2' : '#5b6472';
}

/** Puts the newest point in the legend (none: uPlot's blanks stay). */
function showNewest(u: uPlot) {
  const n = u.data[0]?.length ?? 0;
  if (n > 0) u.setLegend({ idx: n - 1 });
}

export function Chart(props: { title: string; series: SeriesSpec[]; data: uPlot.AlignedData; height?: number; yRange?: [number, number] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = props.series.map((s) => s.label).join('|');

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const grid = { stroke: 'rgba(128,128,128,0.15)', width: 1 };
    const axis = { stroke: axisColor(), grid, ticks: grid };
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: props.height ?? 180,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: props.yRange ? { range: props.yRange } : { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: [axis, { ...axis, size: 48 }],
      hooks: {
        // The pointer left the chart (or never came): show the newest point.
        setCursor: [(u) => { if (u.cursor.idx == null) showNewest(u); }],
      },
      series: [{}, ...props.series.map((s) => ({ label: s.label, stroke: s.color, width: 2, dash: s.dash, points: { show: false } }))],
    };
    plot.current = new uPlot(opts, props.data, el);
    showNewest(plot.current);
    const ro = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: props.height ?? 180 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape]);

  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    u.setData(props.data);
    if (u.cursor.idx == null) showNewest(u);
  }, [props.data]);

  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} />
    </figure>
  );
}
