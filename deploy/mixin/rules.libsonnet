local promql = import 'lib/promql.libsonnet';
local finished = 'cloudstack_async_jobs_finished_total';

{
  prometheusRules+:: {
    local c = $._config,
    local ratio(window) = {
      local failed = 'sum by (cloud, cmd) (rate(%s{status="failed"}[%s]))' % [finished, window],
      local total = 'sum by (cloud, cmd) (rate(%s[%s]))' % [finished, window],
      record: 'cloud_cmd:cloudstack_async_jobs_failed:ratio_rate%s' % window,
      // `or ... * 0`: a command without failures has ratio 0, not no series;
      // `> 0`: a command with no finished jobs has no ratio, not NaN.
      expr: '(\n  %s\nor\n  %s * 0\n)\n/\n(%s > 0)' % [failed, total, total],
    },
    local increase(window) = {
      record: 'cloud_cmd:cloudstack_async_jobs_finished:increase%s' % window,
      expr: 'sum by (cloud, cmd) (increase(%s[%s]))' % [finished, window],
    },
    // The failure-ratio alert reads the series of its own window: another window than 30m
    // gets its recording rules instead of an alert on series that do not exist.
    local extra = if std.member(['5m', '30m'], c.failureRatioWindow) then [] else [c.failureRatioWindow],
    local quantile(q) = {
      record: 'cloud_cmd:cloudstack_async_job_duration_seconds:histogram_quantile',
      // `>= 0` drops the NaN of a window without finished jobs.
      expr: 'histogram_quantile(\n  %s,\n  sum by (cloud, cmd, le) (rate(cloudstack_async_job_duration_seconds_bucket[%s]))\n) >= 0'
            % [promql.num(q), c.durationQuantileWindow],
      labels: { quantile: promql.num(q) },
    },

    groups+: [
      {
        name: 'cloudstack-job-exporter.rules',
        rules: [
          {
            record: 'cloud_cmd_status:cloudstack_async_jobs_finished:rate5m',
            expr: 'sum by (cloud, cmd, status) (rate(%s[5m]))' % finished,
          },
        ]
        + [increase(w) for w in ['30m'] + extra]
        + [ratio(w) for w in ['5m', '30m'] + extra]
        + [quantile(q) for q in c.durationQuantiles],
      },
    ],
  },
}
