// The "CloudStack async jobs" dashboard.
local g = import 'lib.libsonnet';
local promql = import '../lib/promql.libsonnet';

local finished = 'cloudstack_async_jobs_finished_total';
local sel = 'cloud=~"$cloud"';
local selc = 'cloud=~"$cloud", cmd=~"$cmd"';
local rate = '$__rate_interval';
local redAt0 = [{ color: 'red', value: null }, { color: 'green', value: 1 }];
local statusMapping = [{
  type: 'value',
  options: {
    '0': { text: 'pending', color: 'blue', index: 0 },
    '1': { text: 'succeeded', color: 'green', index: 1 },
    '2': { text: 'failed', color: 'red', index: 2 },
    '3': { text: 'cancelled', color: 'orange', index: 3 },
  },
}];

// Pending and failed jobs, one row each; every query carries the same labels so that
// Grafana's merge transformation joins them into columns.
local jobTableTargets =
  local chosen = '(cloudstack_async_job_status{%s} == 0 or cloudstack_async_job_status{%s} == 2)' % [selc, selc];
  local extra = 'group_left (instance_id, account, account_id, management_server_name, error)';
  [
    g.target('(%s{%s} and on (cloud, job_id) %s)\n  * on (cloud, job_id) %s cloudstack_async_job_info{%s}'
             % [t[1], selc, chosen, extra, selc],
             ref=t[0], instant=true, format='table')
    for t in [
      ['A', 'cloudstack_async_job_status'],
      ['B', 'cloudstack_async_job_age_seconds'],
      ['C', 'cloudstack_async_job_result_code'],
    ]
  ];

local queryVar(name, label, query) = {
  name: name,
  label: label,
  type: 'query',
  datasource: g.ds,
  query: { query: query, refId: '%s-var' % name },
  definition: query,
  refresh: 2,
  includeAll: true,
  multi: true,
  allValue: '.*',
  current: { selected: true, text: ['All'], value: ['$__all'] },
  sort: 1,
};

function(c) {
  local failedRate = 'sum by (cloud, cmd) (rate(%s{%s, status="failed"}[30m]))' % [finished, selc],
  local totalRate = 'sum by (cloud, cmd) (rate(%s{%s}[30m]))' % [finished, selc],

  title: c.dashboardTitle,
  uid: c.dashboardUid,
  description: 'Apache CloudStack async jobs and the health of cloudstack-job-exporter.',
  tags: c.dashboardTags,
  timezone: c.dashboardTimezone,
  editable: true,
  graphTooltip: 1,
  refresh: c.dashboardRefresh,
  schemaVersion: 39,
  version: 1,
  time: { from: c.dashboardFrom, to: 'now' },
  annotations: { list: [] },
  links: [],
  templating: {
    list: [
      {
        name: 'datasource',
        label: 'Data source',
        type: 'datasource',
        query: 'prometheus',
        current: if c.datasource == '' then {} else { selected: true, text: c.datasource, value: c.datasource },
        hide: 0,
      },
      queryVar('cloud', 'Cloud', 'label_values(cloudstack_up, cloud)'),
      queryVar('cmd', 'Command', 'label_values(cloudstack_async_jobs{cloud=~"$cloud"}, cmd)'),
    ],
  },

  panels: g.layout([
    g.row('Health of the exporter and the CloudStack API'),
    g.panel(g.stat(
      'CloudStack API up',
      'cloudstack_up{%s}' % sel,
      '{{cloud}}',
      description='1 if the last poll of the cloud succeeded.',
      steps=redAt0,
      mappings=[{ type: 'value', options: { '0': { text: 'down' }, '1': { text: 'up' } } }],
    ), 6, 5),
    g.panel(g.stat('Exporter targets up', 'up{%s}' % c.exporterSelector, '{{instance}}', steps=redAt0), 6, 5),
    g.panel(g.stat(
      'Since last successful poll',
      'time() - cloudstack_exporter_last_successful_poll_timestamp_seconds{%s}' % sel,
      '{{cloud}}',
      unit='s',
      steps=[
        { color: 'green', value: null },
        { color: 'orange', value: 120 },
        { color: 'red', value: c.pollStaleSeconds },
      ],
    ), 6, 5),
    g.panel(g.stat('Tracked jobs', 'cloudstack_exporter_tracked_jobs{%s}' % sel, '{{cloud}}'), 6, 5),
    g.panel(g.timeseries(
      'API requests by outcome',
      [g.target('sum by (cloud, code) (rate(cloudstack_api_requests_total{%s}[%s]))' % [sel, rate], '{{cloud}} {{code}}')],
      unit='reqps',
      description='`error`: transport failure or unreadable body; other values are the HTTP/CloudStack status.',
    ), 8, 8),
    g.panel(g.timeseries(
      'API latency p90 by command',
      [g.target('histogram_quantile(0.9, sum by (cloud, command, le) (rate(cloudstack_api_request_duration_seconds_bucket{%s}[%s])))' % [sel, rate],
                '{{cloud}} {{command}}')],
      unit='s',
    ), 8, 8),
    g.panel(g.timeseries(
      'Poll duration',
      [g.target('cloudstack_exporter_poll_duration_seconds{%s}' % sel, '{{cloud}}')],
      unit='s',
      description='Duration of the last poll cycle; when it nears the poll interval, polls fall behind.',
    ), 8, 8),
    g.panel(g.timeseries(
      'Jobs dropped or malformed',
      [
        g.target('sum by (cloud, reason) (increase(cloudstack_exporter_jobs_dropped_total{%s}[%s]))' % [sel, rate],
                 'dropped {{cloud}} {{reason}}'),
        g.target('sum by (cloud) (increase(cloudstack_exporter_malformed_jobs_total{%s}[%s]))' % [sel, rate],
                 'malformed {{cloud}}', ref='B'),
      ],
      description='`capacity`: the tracking cap was reached; `retention`: finished jobs aged out (normal); '
                  + '`not_found`: CloudStack no longer knows the job (purged). '
                  + 'Malformed: job objects the exporter could not read.',
      draw='bars',
    ), 24, 6),

    // Empty for clouds without `events`: they poll only.
    g.row('Event stream'),
    g.panel(g.stat(
      'Event stream connected',
      'cloudstack_exporter_events_connected{%s}' % sel,
      '{{cloud}}',
      description='1 while the exporter is connected to the cloud\'s RabbitMQ with its queue bound. '
                  + 'Empty for clouds that poll only.',
      steps=redAt0,
      mappings=[{ type: 'value', options: { '0': { text: 'down' }, '1': { text: 'connected' } } }],
    ), 6, 5),
    g.panel(g.stat(
      'Since last event',
      'time() - cloudstack_exporter_last_event_timestamp_seconds{%s}' % sel,
      '{{cloud}}',
      unit='s',
      steps=[
        { color: 'green', value: null },
        { color: 'orange', value: c.eventSilenceSeconds },
      ],
    ), 6, 5),
    g.panel(g.stat(
      'Event gaps (window)',
      'sum by (cloud) (increase(cloudstack_exporter_event_gaps_total{%s}[%s]))' % [sel, c.eventGapsWindow],
      '{{cloud}}',
      description='Jobs polling found pending whose submit event never came while connected: events '
                  + 'were lost, and short jobs may have gone uncounted.',
      steps=[{ color: 'green', value: null }, { color: 'orange', value: 1 }],
    ), 6, 5),
    g.panel(g.stat(
      'Malformed events (window)',
      'sum by (cloud) (increase(cloudstack_exporter_events_malformed_total{%s}[%s]))' % [sel, c.eventGapsWindow],
      '{{cloud}}',
      steps=[{ color: 'green', value: null }, { color: 'orange', value: 1 }],
    ), 6, 5),
    g.panel(g.timeseries(
      'Events received',
      [g.target('sum by (cloud, type) (rate(cloudstack_exporter_events_received_total{%s}[%s]))' % [sel, rate],
                '{{cloud}} {{type}}')],
      unit='ops',
    ), 12, 8),
    g.panel(g.timeseries(
      'How finishes were learned',
      [g.target('sum by (cloud, source) (increase(cloudstack_exporter_jobs_finished_by_source_total{%s}[%s]))' % [sel, rate],
                '{{cloud}} {{source}}')],
      description='`event`: an AsyncJobEvent complete; `list`: listed final already; `query`: queried '
                  + 'after leaving the pending list. With a healthy stream nearly all are `event`; '
                  + '`query` remains for jobs a management-server restart failed (no event).',
      stack=true,
      draw='bars',
    ), 12, 8),

    g.row('Jobs'),
    g.panel(g.timeseries(
      'Tracked jobs by status',
      [g.target('sum by (status) (cloudstack_async_jobs{%s})' % selc, '{{status}}')],
      stack=true,
    ), 8, 8),
    g.panel(g.timeseries(
      'Pending backlog by command',
      [g.target('sum by (cloud, cmd) (cloudstack_async_jobs{%s, status="pending"})' % selc, '{{cloud}} {{cmd}}')],
      stack=true,
    ), 8, 8),
    g.panel(g.timeseries(
      'Oldest pending job age',
      [g.target('max by (cloud, cmd) (cloudstack_async_jobs_oldest_pending_age_seconds{%s})' % selc, '{{cloud}} {{cmd}}')],
      unit='s',
      description='CloudStack fails jobs blocking a queue after job.cancel.threshold.minutes (60 by default); '
                  + 'the alert fires at %s minutes.' % promql.num(std.floor(c.pendingTooLongSeconds / 60)),
    ), 8, 8),
    g.panel(g.timeseries(
      'Jobs finished by status',
      [g.target('sum by (status) (increase(%s{%s}[%s]))' % [finished, selc, rate], '{{status}}')],
      stack=true,
      draw='bars',
    ), 12, 8),
    g.panel(g.timeseries(
      'Pending jobs by management server',
      [g.target('sum by (cloud, management_server_id) (cloudstack_async_jobs_pending_by_management_server{%s})' % sel,
                '{{cloud}} {{management_server_id}}')],
      description='Only for servers that report managementserverid (CloudStack 4.19+). '
                  + 'A stuck management server shows as its pending jobs piling up.',
    ), 12, 8),
    g.panel(g.timeseries(
      'Oldest pending job by management server',
      [g.target('max by (cloud, management_server_id) (cloudstack_async_jobs_oldest_pending_age_by_management_server_seconds{%s})' % sel,
                '{{cloud}} {{management_server_id}}')],
      unit='s',
      description='Only for servers that report managementserverid (CloudStack 4.19+). '
                  + 'A server that stopped working through its jobs shows as a line that keeps '
                  + 'rising while the others stay low.',
    ), 12, 8),

    g.row('Failures'),
    g.panel(g.timeseries(
      'Failed jobs by command',
      [g.target('sum by (cloud, cmd) (increase(%s{%s, status="failed"}[%s]))' % [finished, selc, rate], '{{cloud}} {{cmd}}')],
      stack=true,
      draw='bars',
    ), 8, 8),
    g.panel(g.timeseries(
      'Failed jobs by result code',
      [g.target('sum by (result_code) (increase(%s{%s, status="failed"}[%s]))' % [finished, selc, rate], '{{result_code}}')],
      stack=true,
      draw='bars',
      description='530 internal error, 431 bad parameter, 533 insufficient capacity, '
                  + '534 resource unavailable, 535 resource allocation error; 0 with status failed: '
                  + 'cancelled by job.cancel.threshold.minutes.',
    ), 8, 8),
    g.panel(g.timeseries(
      'Failure ratio by command (30m)',
      [g.target('(%s or %s * 0)\n/\n(%s > 0)' % [failedRate, totalRate, totalRate], '{{cloud}} {{cmd}}')],
      unit='percentunit',
    ), 8, 8),

    g.row('Durations'),
    g.panel(g.timeseries(
      'Job duration quantiles by command (30m)',
      [
        local q = c.durationQuantiles[i];
        g.target('histogram_quantile(%s, sum by (cmd, le) (rate(cloudstack_async_job_duration_seconds_bucket{%s}[30m])))'
                 % [promql.num(q), selc],
                 'p%d {{cmd}}' % std.round(q * 100),
                 ref=std.char(std.codepoint('A') + i))
        for i in std.range(0, std.length(c.durationQuantiles) - 1)
      ],
      unit='s',
      description='created to completed, as CloudStack reports them.',
    ), 12, 9),
    g.panel({
      type: 'heatmap',
      title: 'Job duration',
      description: 'Finished jobs of the selected commands by duration; the exemplars link '
                   + 'buckets to the job_id of a job that landed in them.',
      // The exporter attaches a job_id exemplar to each duration bucket (OpenMetrics).
      targets: [g.target('sum by (le) (increase(cloudstack_async_job_duration_seconds_bucket{%s}[%s]))' % [selc, rate],
                         '{{le}}', format='heatmap', exemplar=true)],
      fieldConfig: { defaults: { custom: {} }, overrides: [] },
      options: {
        calculate: false,
        yAxis: { unit: 's', axisPlacement: 'left' },
        cellGap: 1,
        color: { mode: 'scheme', scheme: 'Oranges', steps: 64 },
        tooltip: { show: true, yHistogram: true },
        exemplars: { color: 'rgba(255,0,255,0.7)' },
      },
    }, 12, 9),

    g.row('Pending and failed jobs'),
    g.panel({
      type: 'table',
      title: 'Pending and failed jobs',
      description: 'Needs the per-job series (on by default).',
      targets: jobTableTargets,
      transformations: [
        { id: 'merge', options: {} },
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true, instance: true, job: true },
            renameByName: { 'Value #A': 'status', 'Value #B': 'age', 'Value #C': 'result code' },
            indexByName: {
              cloud: 0,
              cmd: 1,
              job_id: 2,
              'Value #A': 3,
              'Value #B': 4,
              'Value #C': 5,
              'error': 6,
            },
          },
        },
        { id: 'sortBy', options: { sort: [{ field: 'age', desc: true }] } },
      ],
      fieldConfig: {
        defaults: { custom: { filterable: true } },
        overrides: [
          {
            matcher: { id: 'byName', options: 'status' },
            properties: [
              { id: 'mappings', value: statusMapping },
              { id: 'custom.cellOptions', value: { type: 'color-text' } },
            ],
          },
          { matcher: { id: 'byName', options: 'age' }, properties: [{ id: 'unit', value: 's' }] },
        ],
      },
      options: { showHeader: true },
    }, 24, 10),
  ]),
}
