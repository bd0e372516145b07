// Plain-jsonnet panel builders (no grafonnet: the mixin has no dependencies).
{
  ds:: { type: 'prometheus', uid: '${datasource}' },

  target(expr, legend='', ref='A', instant=false, format='time_series', exemplar=null)::
    {
      datasource: $.ds,
      refId: ref,
      expr: expr,
      legendFormat: if legend == '' then '__auto' else legend,
      range: !instant,
      instant: instant,
      format: format,
    } + (if exemplar == null then {} else { exemplar: exemplar }),

  timeseries(title, targets, unit='short', description='', stack=false, draw='line')::
    {
      type: 'timeseries',
      title: title,
      description: description,
      targets: targets,
      fieldConfig: {
        defaults: {
          unit: unit,
          custom: { drawStyle: draw, fillOpacity: if stack then 20 else 0 }
                  + (if stack then { stacking: { mode: 'normal', group: 'A' } } else {}),
        },
        overrides: [],
      },
      options: {
        legend: { displayMode: 'table', placement: 'right', calcs: ['lastNotNull'] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  stat(title, expr, legend, unit='short', description='', steps=null, mappings=[])::
    {
      type: 'stat',
      title: title,
      description: description,
      targets: [$.target(expr, legend, instant=true)],
      fieldConfig: {
        defaults: {
          unit: unit,
          mappings: mappings,
          thresholds: {
            mode: 'absolute',
            steps: if steps == null then [{ color: 'green', value: null }] else steps,
          },
          color: { mode: 'thresholds' },
        },
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'background',
        graphMode: 'none',
        textMode: 'value_and_name',
      },
    },

  // Layout items: row(title) starts a new row; panel(p, w, h) places p left to right on
  // Grafana's 24-column grid, wrapping when the row is full.
  row(title):: { row: title },
  panel(p, w, h):: { panel: p, w: w, h: h },

  layout(items)::
    local step(state, item) =
      local id = std.length(state.panels) + 1;
      if std.objectHas(item, 'row') then
        local y = state.y + state.rowH;
        state {
          x: 0,
          y: y + 1,
          rowH: 0,
          panels+: [{
            type: 'row',
            title: item.row,
            collapsed: false,
            gridPos: { h: 1, w: 24, x: 0, y: y },
            panels: [],
            id: id,
          }],
        }
      else
        local wrap = state.x + item.w > 24;
        local x = if wrap then 0 else state.x;
        local y = if wrap then state.y + state.rowH else state.y;
        local rowH = if wrap then 0 else state.rowH;
        state {
          x: x + item.w,
          y: y,
          rowH: std.max(rowH, item.h),
          panels+: [{ datasource: $.ds } + item.panel + {
            gridPos: { h: item.h, w: item.w, x: x, y: y },
            id: id,
          }],
        };
    std.foldl(step, items, { x: 0, y: 0, rowH: 0, panels: [] }).panels,
}
